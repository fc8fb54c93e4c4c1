from django.urls import path

from . import apis

urlpatterns = [
    path("mobile/me/", apis.MobileMeApi.as_view(), name="mobile-me"),
    path("mobile/me/export/", apis.MobileExportApi.as_view(), name="mobile-export"),
]
