from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "apps.webhooks"
    label = "webhooks"

    def ready(self) -> None:
        # In-transaction listeners (apps/messaging/hooks.py): an event row commits or rolls
        # back with the status change it reports.
        from apps.messaging import hooks
        from apps.messaging.timeline import timeline_source_register

        from . import recording, timeline

        hooks.on_status_change(recording.status_changed)
        hooks.on_chat_received(recording.chat_received)
        # And on a message's admin page, with its attempts and pushes.
        timeline_source_register(timeline.message_webhook_events)
