from django.urls import path

from . import apis

urlpatterns = [
    path("realtime/tickets/", apis.RealtimeTicketApi.as_view(), name="realtime-ticket"),
]
