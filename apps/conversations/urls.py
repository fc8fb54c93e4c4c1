from django.urls import path

from . import apis

urlpatterns = [
    path("conversations/", apis.ConversationsApi.as_view(), name="conversations"),
    path("conversations/unread-count/", apis.UnreadCountApi.as_view(), name="conversation-unread-count"),
    path(
        "conversations/<str:conversation_id>/",
        apis.ConversationDetailApi.as_view(),
        name="conversation-detail",
    ),
    path(
        "conversations/<str:conversation_id>/messages/",
        apis.ConversationMessagesApi.as_view(),
        name="conversation-messages",
    ),
    path(
        "conversations/<str:conversation_id>/read/",
        apis.ConversationReadApi.as_view(),
        name="conversation-read",
    ),
    path(
        "conversations/<str:conversation_id>/archive/",
        apis.ConversationArchiveApi.as_view(),
        name="conversation-archive",
    ),
    path(
        "conversations/<str:conversation_id>/close/",
        apis.ConversationCloseApi.as_view(),
        name="conversation-close",
    ),
]
