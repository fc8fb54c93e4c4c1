from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    """Data protection (SPEC.md section 10): export, erasure, retention."""

    name = "apps.privacy"
    label = "privacy"
