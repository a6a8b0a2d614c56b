"""A ``multipart/form-data`` body streamed from an open file, with its exact length known up front."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import BinaryIO

CHUNK = 1 << 20  # 1 MiB: the most of the file held in memory at once


class MultipartUpload:
    """Text ``fields`` then one file part named ``file_field``, read ``CHUNK`` bytes at a time."""

    def __init__(
        self,
        fh: BinaryIO,
        *,
        filename: str,
        fields: dict[str, str],
        file_field: str = "file",
        on_bytes: Callable[[int], None] = lambda n: None,
        chunk_size: int = CHUNK,
    ) -> None:
        self.fh, self.on_bytes, self.chunk_size = fh, on_bytes, chunk_size
        self.boundary = "hilum-" + secrets.token_hex(16)
        head = b"".join(self._part_header(name) + value.encode() + b"\r\n" for name, value in fields.items())
        safe_name = filename.replace('"', "%22").replace("\r", "").replace("\n", "")
        self.head = head + self._part_header(file_field, safe_name)
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.file_size = os.fstat(fh.fileno()).st_size

    def _part_header(self, name: str, filename: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        lines = [f"--{self.boundary}", f"Content-Disposition: {disposition}"]
        if filename is not None:
            lines.append("Content-Type: application/octet-stream")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return len(self.head) + self.file_size + len(self.tail)

    def stream(self) -> Iterator[bytes]:
        yield self.head
        while chunk := self.fh.read(self.chunk_size):
            yield chunk
            self.on_bytes(len(chunk))
        yield self.tail
