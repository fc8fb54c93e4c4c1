"""Leave room in delivery-attempt pages so that closing an attempt is a HOT update.

An attempt is written when its frame is (outcome `sent`) and updated once when it settles
(`acked`, `timeout`, ...); neither indexed column changes. With full pages (the default
fillfactor, 100, and COPY-written rows) two thirds of those updates found no room on the page
and wrote a new version elsewhere, with an entry in both indexes; with 30 % of each page free
they stay on it, without index entries. PostgreSQL only: a storage parameter.
"""

from django.db import migrations

TABLE = "messaging_deliveryattempt"


def fillfactor(value: int):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"ALTER TABLE {TABLE} SET (fillfactor = {value})")

    return apply


class Migration(migrations.Migration):
    dependencies = [("messaging", "0005_leaner_indexes")]

    operations = [migrations.RunPython(fillfactor(70), fillfactor(100))]
