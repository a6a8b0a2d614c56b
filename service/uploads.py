"""Stream a multipart upload straight to disk with a byte cap (never whole into memory)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from service.errors import Invalid, TooLarge, UnsupportedMedia

MAX_FIELD_BYTES = 64 * 1024


@dataclass
class ReceivedUpload:
    path: Path
    filename: str | None
    size: int
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _PartState:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytes = b""
    header_value: bytes = b""
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)


def multipart_openapi(file_description: str, fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """``openapi_extra`` documenting a streamed multipart body (a binary ``file`` plus small fields)."""
    properties = {"file": {"type": "string", "format": "binary", "description": file_description}, **fields}
    schema = {"type": "object", "required": ["file", *required], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


async def receive_file(request: Request, dest: Path, *, file_field: str, max_bytes: int) -> ReceivedUpload:
    """Write the multipart field ``file_field`` to ``dest``; other small fields come back as strings.

    The file is written to a partial name and renamed only when complete; on any error it is removed.
    Refused (422): a body that is not well-formed multipart, a missing ``file_field`` (also when the file
    came under another field name: such parts are skipped, not buffered), or ``file_field`` sent twice.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UnsupportedMedia(f"expected multipart/form-data with a '{file_field}' field")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MAX_FIELD_BYTES:
        raise TooLarge(f"upload is {int(declared)} bytes; the limit is {max_bytes} bytes")

    partial = dest.with_name(dest.name + ".partial")
    dest.parent.mkdir(parents=True, exist_ok=True)
    out = open(partial, "wb")  # noqa: SIM115 - closed in finally
    part = _PartState()
    received = ReceivedUpload(path=dest, filename=None, size=0)
    found_file = False
    stray: list[str] = []  # file parts under another field name: skipped

    def on_part_begin() -> None:
        nonlocal part
        part = _PartState()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part.header_value += data[start:end]

    def on_header_end() -> None:
        part.headers[part.header_field.lower()] = part.header_value
        part.header_field, part.header_value = b"", b""

    def on_headers_finished() -> None:
        nonlocal found_file
        _, disp = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = disp.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = disp.get(b"filename")
        part.filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        if part.name == file_field:
            if found_file:
                raise Invalid(f"the form field '{file_field}' is sent more than once; send one file per upload")
            found_file = True
            received.filename = part.filename
        elif part.filename is not None:
            stray.append(part.name)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.name != file_field and part.filename is not None:
            return  # a file under another field name: never buffered
        if part.name == file_field:
            received.size += end - start
            if received.size > max_bytes:
                raise TooLarge(f"upload is larger than the limit of {max_bytes} bytes")
            out.write(data[start:end])
        else:
            part.value += data[start:end]
            if len(part.value) > MAX_FIELD_BYTES:
                hint = "" if found_file else f"; the file goes in the form field '{file_field}'"
                raise Invalid(f"form field '{part.name}' is too long{hint}")

    def on_part_end() -> None:
        if part.name and part.name != file_field and part.filename is None:
            received.fields[part.name] = part.value.decode("utf-8", "replace")

    parser = MultipartParser(
        params[b"boundary"],
        callbacks={  # type: ignore[arg-type]
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except FormParserError as exc:
            raise Invalid(f"the multipart body is malformed ({exc})") from None
        out.close()
        if not found_file:
            got = f" (got a file in the field '{stray[0]}')" if stray else ""
            raise Invalid(f"form field '{file_field}' is missing{got}")
        os.replace(partial, dest)
    except Exception:
        out.close()
        partial.unlink(missing_ok=True)
        raise
    return received


async def read_upload(upload: Any, *, max_bytes: int) -> bytes:
    """A small uploaded file's bytes (a FastAPI ``UploadFile``); TooLarge past ``max_bytes`` (reads one byte beyond)."""
    data: bytes = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge(f"image is larger than the limit of {max_bytes} bytes")
    return data
