"""The body and image limits of a real uvicorn (not the in-process client): `HILUM_MAX_IMAGE_BYTES` (413
naming the limit), the upload cap answered early to a streamed body far past it (and to a declared
`Content-Length`) while the server stays healthy, and the real pixel limit (40 MP) refused from a small PNG's
header without the API's memory growing."""

from __future__ import annotations

import re
import select
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.service.ops import ops_stack
from tests.service.test_micro_batching import MODEL, film, register_tiny_model

pytestmark = pytest.mark.e2e

MAX_IMAGE_BYTES = 200_000
MAX_UPLOAD_BYTES = 1 << 20
FORM_SLACK = 1 << 20  # service.guard.FORM_SLACK: multipart headers and small fields
BOUNDARY = "limitsboundary"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, redis_available: None) -> Iterator[Stack]:
    env = {"HILUM_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES), "HILUM_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)}
    with ops_stack(tmp_path_factory.mktemp("limits"), worker=False, **env) as stack:
        register_tiny_model(stack)
        yield stack


def names(limit: int, detail: str) -> bool:
    """Whether ``detail`` gives ``limit`` in bytes (written 200000 or 200,000)."""
    return re.search(rf"\b({limit}|{limit:,}) bytes", detail) is not None


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def test_image_over_max_image_bytes_is_413_naming_the_limit(limited: Stack) -> None:
    with limited.client() as client:
        ok = client.post(f"/v1/models/{MODEL}/predict", files={"file": ("x.png", film(1), "image/png")})
        assert ok.status_code == 200, ok.text
        for size in (MAX_IMAGE_BYTES + 1, MAX_IMAGE_BYTES + FORM_SLACK + 1):  # read by the route; refused at once
            data = film(1) + b"\0" * (size - len(film(1)))
            r = client.post(f"/v1/models/{MODEL}/predict", files={"file": ("x.png", data, "image/png")})
            assert r.status_code == 413, (size, r.text)
            assert names(MAX_IMAGE_BYTES, r.json()["detail"]), r.json()


def raw_request(stack: Stack, head: str) -> socket.socket:
    port = int(stack.base_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode())
    return sock


def read_response(sock: socket.socket) -> tuple[int, str]:
    """(status, body) of a response whose server closes or finishes it."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < content_length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode(errors="replace")


def content_length(data: bytes) -> int:
    found = re.search(rb"(?i)content-length: *(\d+)", data.split(b"\r\n\r\n", 1)[0])
    return int(found.group(1)) if found else 1 << 30


def headers(stack: Stack, extra: str) -> str:
    return (
        "POST /v1/datasets HTTP/1.1\r\nHost: hilum\r\n"
        f"Authorization: Bearer {stack.admin_key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{extra}\r\n"
    )


def test_streamed_upload_past_the_cap_is_refused_early_and_the_server_stays_up(limited: Stack) -> None:
    cap = MAX_UPLOAD_BYTES + FORM_SLACK
    total, chunk = 64 << 20, 64 << 10  # 64 MiB offered, 32x the cap
    sock = raw_request(limited, headers(limited, "Transfer-Encoding: chunked\r\n"))
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    sent, answered = 0, False
    try:
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        block = b"%x\r\n%s\r\n" % (chunk, b"\0" * chunk)
        while sent < total:
            sock.sendall(block)
            sent += chunk
            # Past the cap, give the server a moment to answer before sending more.
            if select.select([sock], [], [], 0.05 if sent > cap else 0)[0]:
                answered = True
                break
    except (BrokenPipeError, ConnectionResetError):
        answered = True  # the server closed the connection: its answer is waiting to be read
    assert answered, f"all {sent:,} bytes were accepted without an answer"
    status, body = read_response(sock)
    sock.close()
    assert status == 413, body
    assert names(MAX_UPLOAD_BYTES, body), body  # the route's own count, or the guard's cap past the form slack
    assert sent < cap + (8 << 20), f"the server read {sent:,} bytes before refusing a {cap:,}-byte cap"

    # A declared Content-Length past the cap is refused before one body byte is sent.
    sock = raw_request(limited, headers(limited, f"Content-Length: {10 << 30}\r\n"))
    status, body = read_response(sock)
    sock.close()
    assert status == 413 and names(MAX_UPLOAD_BYTES, body), body

    assert limited.procs["api"].poll() is None
    with limited.client() as client:
        assert client.get("/healthz").status_code == 200
        r = client.post(f"/v1/models/{MODEL}/predict", files={"file": ("x.png", film(2), "image/png")})
        assert r.status_code == 200, r.text


def declared_png(width: int, height: int, rows: int) -> bytes:
    """A small valid PNG whose IHDR declares ``width`` x ``height`` 8-bit grey pixels and whose data holds
    ``rows`` rows of zeros (all of them: a decoder would really write every pixel; zeros compress ~1000:1)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp, row = zlib.compressobj(9), b"\0" * (width + 1)
    idat = b"".join(comp.compress(row) for _ in range(rows)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# Just over 40 MP (40,005,625 pixels) with every row present; 10 gigapixels with a few rows.
OVER_THE_LIMIT = [(6325, 6325, 6325), (100_000, 100_000, 4)]


def test_real_pixel_limit_refuses_a_small_png_from_its_header(limited: Stack) -> None:
    pid = limited.procs["api"].pid
    with limited.client() as client:
        client.post(f"/v1/models/{MODEL}/predict", files={"file": ("x.png", film(3), "image/png")})  # warm
        peak = peak_rss(pid)  # one baseline for every route: a peak, once reached, would hide the next one
        for route in (f"/v1/models/{MODEL}/predict", "/v1/preview"):
            for width, height, rows in OVER_THE_LIMIT:
                data = declared_png(width, height, rows)
                assert len(data) < 200_000
                r = client.post(route, files={"file": ("big.png", data, "image/png")})
                assert r.status_code == 422, r.text
                detail = r.json()["detail"]
                assert "limit of 40.0 megapixels" in detail, (route, detail)
                assert f"{width}x{height} pixels" in detail or f"{width * height:,} pixels" in detail, detail
    grown = peak_rss(pid) - peak
    assert grown < 30 << 20, f"the API's peak memory grew by {grown >> 20} MiB refusing a header"
