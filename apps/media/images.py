"""Pillow work on images: full decode before acceptance, and thumbnails.

A decompression bomb is refused from its header: the dimensions are read without decoding
anything and checked against MEDIA_IMAGE_MAX_PIXELS first, and Pillow's own bomb warning is
raised as an error as a second line. Only then is every frame decoded, so a truncated or
corrupt file is refused before it is stored.
"""

from __future__ import annotations

import io
import warnings
from typing import BinaryIO

from django.conf import settings
from PIL import Image, ImageOps

from .errors import InvalidImage
from .models import ThumbnailSize

# What Pillow raises for a file it cannot decode: bad header, truncated data, bad chunk, ...
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError)


def image_validate(file: BinaryIO, *, pillow_format: str) -> tuple[int, int]:
    """Decode every frame of the image in `file`; return its (width, height).

    Raise InvalidImage for too many pixels or frames, or anything that does not decode
    completely as `pillow_format`.
    """
    file.seek(0)
    max_pixels = settings.MEDIA_IMAGE_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file, formats=[pillow_format]) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InvalidImage(
                        f"The image is {width}x{height} pixels; at most {max_pixels:,} pixels are accepted."
                    )
                frames = getattr(image, "n_frames", 1)
                max_frames = settings.MEDIA_IMAGE_MAX_FRAMES
                if frames > max_frames:
                    raise InvalidImage(f"The image has {frames} frames; at most {max_frames} are accepted.")
                for frame in range(frames):
                    image.seek(frame)
                    image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"The image has too many pixels: {exc}") from exc
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"The image cannot be decoded: {exc}") from exc
    finally:
        file.seek(0)
    return width, height


def thumbnails_render(file: BinaryIO) -> dict[int, tuple[bytes, str]]:
    """Return, for each thumbnail size, the encoded bytes and the Pillow format used.

    Each fits in a sizexsize box with the aspect kept (never enlarged); the EXIF orientation
    is applied. Pictures with transparency become PNG, the rest JPEG.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(file) as image:
            image.seek(0)
            image.load()
            upright = ImageOps.exif_transpose(image)
            has_alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
            base = upright.convert("RGBA" if has_alpha else "RGB")
    out_format = "PNG" if has_alpha else "JPEG"
    rendered = {}
    for size in ThumbnailSize.values:
        thumb = base.copy()
        thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        if out_format == "JPEG":
            thumb.save(buffer, "JPEG", quality=85, optimize=True)
        else:
            thumb.save(buffer, "PNG", optimize=True)
        rendered[size] = (buffer.getvalue(), out_format)
    return rendered
