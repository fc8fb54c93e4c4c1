from django.urls import path

from . import apis

urlpatterns = [
    path("webhooks/", apis.WebhookListCreateApi.as_view(), name="webhooks"),
    path("webhooks/<int:endpoint_id>/", apis.WebhookDetailApi.as_view(), name="webhook-detail"),
    path(
        "webhooks/<int:endpoint_id>/rotate-secret/",
        apis.WebhookRotateSecretApi.as_view(),
        name="webhook-rotate-secret",
    ),
    path(
        "webhooks/<int:endpoint_id>/deliveries/",
        apis.WebhookDeliveriesApi.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "webhooks/<int:endpoint_id>/deliveries/<int:delivery_id>/redeliver/",
        apis.WebhookRedeliverApi.as_view(),
        name="webhook-redeliver",
    ),
]
