from django.urls import path

from . import apis

urlpatterns = [
    path("devices/", apis.DeviceListCreateApi.as_view(), name="devices"),
    path("devices/<int:device_id>/", apis.DeviceDetailApi.as_view(), name="device-detail"),
    path("mobile/me/preferences/", apis.PreferencesApi.as_view(), name="mobile-preferences"),
]
