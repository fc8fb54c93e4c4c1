"""The benchmark's same-run reference: a bare DRF create endpoint doing our single send's durable write.

A separate Django project (settings, urls, asgi and one app, `notes`), served by
`python -m messaging_project.web --application bench.reference.asgi:application` exactly as our
web is served. `POST /notes/` with DRF's own TokenAuthentication, in one transaction, locks the
recipient's row, bumps its `last_seq` and inserts a Note with that seq; it answers 201.
"""
