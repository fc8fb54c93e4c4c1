from django.urls import path

from .consumers import BusinessConsumer, MobileConsumer

websocket_urlpatterns = [
    path("ws/mobile/", MobileConsumer.as_asgi()),
    path("ws/business/", BusinessConsumer.as_asgi()),
]
