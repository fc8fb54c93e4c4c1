from django.urls import path

from . import apis

urlpatterns = [
    path("messages/", apis.MessagesApi.as_view(), name="messages"),
    path("messages/batch/", apis.BatchSendApi.as_view(), name="message-batch"),
    path("messages/broadcast/", apis.BroadcastCreateApi.as_view(), name="broadcast-create"),
    path(
        "messages/broadcast/<str:broadcast_id>/", apis.BroadcastDetailApi.as_view(), name="broadcast-detail"
    ),
    path("messages/<str:message_id>/", apis.MessageDetailApi.as_view(), name="message-detail"),
    path("messages/<str:message_id>/cancel/", apis.MessageCancelApi.as_view(), name="message-cancel"),
    path("dead-letters/", apis.DeadLetterListApi.as_view(), name="dead-letter-list"),
    path("dead-letters/requeue/", apis.DeadLetterBulkRequeueApi.as_view(), name="dead-letter-bulk-requeue"),
    path("dead-letters/<str:dead_letter_id>/", apis.DeadLetterDetailApi.as_view(), name="dead-letter-detail"),
    path(
        "dead-letters/<str:dead_letter_id>/requeue/",
        apis.DeadLetterRequeueApi.as_view(),
        name="dead-letter-requeue",
    ),
]
