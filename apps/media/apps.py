from django.apps import AppConfig


class MediaConfig(AppConfig):
    name = "apps.media"
    label = "media"

    def ready(self) -> None:
        from django.conf import settings
        from PIL import Image

        # Pillow's own bomb guard is a backstop behind the header check in images.py; its
        # default (~89 MP) is far above what a chat picture needs.
        Image.MAX_IMAGE_PIXELS = settings.MEDIA_IMAGE_MAX_PIXELS
