"""Django admin for media: a read-only list with filters, and a link to each file."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from .models import Media
from .storage import signed_url


@admin.register(Media)
class MediaAdmin(admin.ModelAdmin):
    """Uploads are made through the API and removed by their uploader or the cleanup job."""

    list_display = ("id", "media_type", "content_type", "size", "status", "uploader", "message", "created_at")
    list_filter = ("media_type", "status", "content_type")
    list_select_related = ("sender", "mobile_user")
    search_fields = ("=id", "file_name", "=message__id")
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = (
        "id",
        "media_type",
        "content_type",
        "size",
        "file_name",
        "status",
        "failure_reason",
        "sender",
        "mobile_user",
        "message",
        "position",
        "storage_key",
        "download",
        "thumbnail_small_key",
        "thumbnail_medium_key",
        "thumbnail_large_key",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="uploader")
    def uploader(self, media: Media) -> str:
        return str(media.uploader)

    @admin.display(description="download (1 h link)")
    def download(self, media: Media) -> str:
        link = signed_url(media.storage_key, content_type=media.content_type, file_name=media.file_name)
        return format_html('<a href="{}" rel="noopener noreferrer">{}</a>', link.url, media.file_name)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Media | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Media | None = None) -> bool:
        # Deleting here would skip the file cleanup and the attached-media rule.
        return False
