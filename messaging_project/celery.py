"""Celery application: broker and queues from Django settings (CELERY_* names)."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings.local")

app = Celery("messaging_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("high"), Queue("default"), Queue("low"))
app.autodiscover_tasks()
