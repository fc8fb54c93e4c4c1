"""The upload handler of POST /api/v1/media/: the file goes to a temporary file on disk, and
the upload is cut off as soon as more bytes than the largest accepted size have arrived."""

from __future__ import annotations

from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict

from .sniffing import largest_limit

FILE_FIELD = "file"
# Room for the multipart boundaries and part headers around the file.
MULTIPART_OVERHEAD = 64 * 1024


class MediaUploadHandler(TemporaryFileUploadHandler):
    """Stream the `file` field to disk; stop past the largest size limit (see `too_large`).

    Other file fields and any second `file` are read past without being written anywhere
    (their bytes still count towards the limit).
    """

    def __init__(self, request=None) -> None:
        super().__init__(request)
        self.limit = largest_limit()
        self.received = 0
        self.too_large = False
        self._seen_file = False
        self._skipping = False

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        # A declared length already past the limit is refused before parsing anything.
        if content_length and content_length > self.limit + MULTIPART_OVERHEAD:
            self.too_large = True
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def new_file(self, field_name, *args, **kwargs) -> None:
        # Skipped parts are swallowed here rather than with SkipFile: the parser's cleanup for
        # SkipFile closes `self.file`, which may be the `file` already received.
        self._skipping = field_name != FILE_FIELD or self._seen_file
        if self._skipping:
            return
        self._seen_file = True
        super().new_file(field_name, *args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.too_large = True
            # The parser then closes (and so deletes) the partial temporary file.
            raise StopUpload(connection_reset=True)
        if self._skipping:
            return None
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size: int):
        if self._skipping:
            return None
        return super().file_complete(file_size)
