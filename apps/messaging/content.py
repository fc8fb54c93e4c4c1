"""Content rules: HTML is stripped from text, JSON must parse, length and attachments are bounded."""

from __future__ import annotations

import html
import json

import nh3
from django.core.exceptions import ValidationError

from .models import ContentType

MAX_CONTENT_LENGTH = 10_000
# Media attached to one message (SPEC section 3).
MAX_ATTACHMENTS = 5


def normalize_content(content: str, content_type: str) -> str:
    """Return `content` cleaned for `content_type`, or raise ValidationError naming the problem."""
    if content_type == ContentType.JSON:
        try:
            json.loads(content)
        except ValueError as exc:
            raise ValidationError(f"content is not valid JSON: {exc}.") from exc
    elif "<" in content:
        # Tags and their script/style bodies go; entities are decoded back to the text they
        # stand for, since clients render this as plain text.
        content = html.unescape(nh3.clean(content, tags=set(), clean_content_tags={"script", "style"}))
    if not content.strip():
        raise ValidationError("content is empty.")
    if len(content) > MAX_CONTENT_LENGTH:
        raise ValidationError(f"content is longer than {MAX_CONTENT_LENGTH} characters.")
    return content
