from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "apps.webhooks"
    label = "webhooks"

    def ready(self) -> None:
        # In-transaction listeners (apps/messaging/hooks.py): an event row commits or rolls
        # back with the status change it reports.
        from apps.messaging import hooks

        from . import recording

        hooks.on_status_change(recording.status_changed)
        hooks.on_chat_received(recording.chat_received)
