from django.urls import path

from . import apis

urlpatterns = [
    path("media/", apis.MediaUploadApi.as_view(), name="media-upload"),
    path("media/<str:media_id>/", apis.MediaDetailApi.as_view(), name="media-detail"),
]
