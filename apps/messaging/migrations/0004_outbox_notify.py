"""Notify the outbox relay (apps/messaging/relay.py) when messages are inserted (PostgreSQL)."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION messaging_outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('messaging_outbox', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER messaging_message_outbox_notify
    AFTER INSERT ON messaging_message
    FOR EACH STATEMENT EXECUTE FUNCTION messaging_outbox_notify();
"""
DROP = """
DROP TRIGGER IF EXISTS messaging_message_outbox_notify ON messaging_message;
DROP FUNCTION IF EXISTS messaging_outbox_notify();
"""


def _on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("messaging", "0003_chat")]

    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP))]
