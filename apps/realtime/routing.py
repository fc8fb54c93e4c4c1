from django.urls import path

from .consumers import MobileConsumer

websocket_urlpatterns = [
    path("ws/mobile/", MobileConsumer.as_asgi()),
]
