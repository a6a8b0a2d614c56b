"""The client's pure parts: config file, exit codes, SSE parsing, the streamed multipart body; no server."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hilum.client.config import ClientSettings, config_path, resolve, write_file
from hilum.client.errors import ApiError, Exit, NotConfigured, exit_for_status
from hilum.client.multipart import MultipartUpload
from hilum.client.sse import parse_events
from tests.cli.conftest import client_env, invoke, run_hilum


def test_config_file_is_private_and_env_overrides_it(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not leave the key readable by others
    try:
        path = write_file(config_path(ClientSettings(config_home=tmp_path)), url="http://a:1", key="hk_file")
    finally:
        os.umask(old)
    assert path == tmp_path / "hilum" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    conn = resolve(ClientSettings(config_home=tmp_path))
    assert (conn.url, conn.key, conn.source) == ("http://a:1", "hk_file", str(path))
    conn = resolve(ClientSettings(config_home=tmp_path, url="b:2", key="hk_env"))
    assert (conn.url, conn.key, conn.source) == ("http://b:2", "hk_env", "environment")
    conn = resolve(ClientSettings(config_home=tmp_path, key="hk_env"))
    assert (conn.url, conn.key) == ("http://a:1", "hk_env")


def test_settings_read_hilum_url_key_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HILUM_URL", "http://h:9")
    monkeypatch.setenv("HILUM_KEY", "hk_x")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    settings = ClientSettings()
    assert (settings.url, settings.key, config_path(settings)) == ("http://h:9", "hk_x", tmp_path / "hilum/config.toml")


def test_missing_configuration_exits_3(tmp_path: Path) -> None:
    with pytest.raises(NotConfigured):
        resolve(ClientSettings(config_home=tmp_path))
    result = invoke("models", "list", env=client_env(tmp_path))
    assert result.exit_code == Exit.NOT_CONFIGURED
    assert "hilum login" in result.stderr


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (401, 4, "key refused"),
        (403, 5, "role may not"),
        (404, 6, "not found"),
        (409, 7, "conflict"),
        (413, 8, "too large"),
        (422, 9, "refused (422)"),
        (400, 9, "refused (400)"),
        (429, 10, "retry after 7 s"),
        (500, 11, "server error"),
        (503, 11, "server error"),
    ],
)
def test_every_status_has_its_exit_code_and_words(status: int, code: int, words: str) -> None:
    error = ApiError(status, "the detail", method="GET", url="http://x/v1/y", retry_after="7")
    assert exit_for_status(status) == code == error.exit_code
    assert words in error.message and "the detail" in error.message
    assert len({int(e) for e in Exit}) == len(Exit)  # codes are distinct


def test_server_down_names_the_url(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    url = f"http://127.0.0.1:{port}"
    result = invoke("datasets", "list", env=client_env(tmp_path, url=url, key="hk_x"))
    assert result.exit_code == Exit.UNREACHABLE
    assert f"cannot reach the Hilum server at {url}" in result.stderr
    result = invoke("jobs", "list", "--json", env=client_env(tmp_path, url=url, key="hk_x"))
    assert result.exit_code == Exit.UNREACHABLE
    assert json.loads(result.stdout)["error"]["exit_code"] == Exit.UNREACHABLE


def test_sse_events_skip_keepalives() -> None:
    lines = [": keep-alive", "", "event: job", 'data: {"a": 1}', "", "event: end", "data: {}", ""]
    assert list(parse_events(lines)) == [("job", '{"a": 1}'), ("end", "{}")]


def test_multipart_body_streams_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.zip"
    path.write_bytes(os.urandom(300_000))
    seen: list[int] = []
    with path.open("rb") as fh:
        raw = fh.read
        largest = [0]

        def read(n: int = -1) -> bytes:
            chunk = raw(n)
            largest[0] = max(largest[0], len(chunk))
            return chunk

        fh.read = read  # type: ignore[method-assign,assignment]
        body = MultipartUpload(fh, filename='a"b.zip', fields={"name": "demo"}, on_bytes=seen.append, chunk_size=65536)
        data = b"".join(body.stream())
    assert largest[0] <= 65536 and sum(seen) == 300_000 and len(seen) == 5
    assert len(data) == body.content_length
    assert b'name="name"\r\n\r\ndemo\r\n' in data and b'filename="a%22b.zip"' in data
    assert data.endswith(f"--{body.boundary}--\r\n".encode())


class StubHandler(BaseHTTPRequestHandler):
    """Answers every request with the status, headers and body queued on the server."""

    def do_GET(self) -> None:  # noqa: N802
        status, headers, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "headers", "body", "code", "words"),
    [
        (429, {"Retry-After": "30"}, b'{"detail": "slow down"}', Exit.RATE_LIMITED, "retry after 30 s: slow down"),
        (503, {}, b'{"detail": "database unavailable"}', Exit.SERVER, "server error (503): database unavailable"),
        (502, {}, b"<html>Bad Gateway</html>", Exit.SERVER, "server error (502): <html>Bad Gateway</html>"),
        (413, {}, b'{"detail": "upload over 8 GiB"}', Exit.TOO_LARGE, "too large for the server (413)"),
    ],
)
def test_statuses_a_stack_cannot_easily_produce(
    stub_server: ThreadingHTTPServer, tmp_path: Path, status: int, headers: dict, body: bytes, code: int, words: str
) -> None:
    stub_server.answer = (status, {"Content-Type": "application/json", **headers}, body)  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{stub_server.server_address[1]}"
    result = invoke("models", "list", env=client_env(tmp_path, url=url, key="hk_x"))
    assert result.exit_code == code and words in result.stderr
    result = invoke("models", "list", "--json", env=client_env(tmp_path, url=url, key="hk_x"))
    error = json.loads(result.stdout)["error"]
    assert error["status"] == status and error["exit_code"] == code


def test_help_lists_client_and_admin_commands(tmp_path: Path) -> None:
    result = invoke("--help", env=client_env(tmp_path))
    assert result.exit_code == 0
    for command in ("login", "logout", "datasets", "jobs", "models", "predict"):
        assert command in result.stdout
    for command in ("run", "worker", "migrate", "synth", "create-key", "weights"):
        assert command in result.stdout


def test_admin_commands_keep_their_names_and_flags(tmp_path: Path) -> None:
    env = client_env(tmp_path)
    env.update(HILUM_DATA_DIR=str(tmp_path / "var"), HILUM_DATABASE_URL=f"sqlite:///{tmp_path / 'h.db'}")
    synth = run_hilum("synth", str(tmp_path / "d.zip"), "--per-class", "2", "--size", "64", "--format", "png", env=env)
    assert synth.returncode == 0 and (tmp_path / "d.zip").exists(), synth.stderr
    key = run_hilum("create-key", "--name", "ops", "--role", "staff", env=env)
    assert key.returncode == 0 and key.stdout.strip().startswith("hk_"), key.stderr
    assert run_hilum("create-key", "--name", "ops", "--role", "nobody", env=env).returncode == Exit.USAGE


class FakeJobs:
    """Stands in for HilumClient in `snapshots`: an event stream that may break, and GET /v1/jobs/{id}."""

    def __init__(self, stream: list[str], polled: list[str], *, breaks: Exception | None = None) -> None:
        self.stream, self.polled, self.breaks, self.gets = stream, polled, breaks, 0

    def job_events(self, job_id: str) -> Iterator[dict]:
        for status in self.stream:
            yield {"id": job_id, "status": status}
        if self.breaks:
            raise self.breaks

    def get_job(self, job_id: str) -> dict:
        self.gets += 1
        return {"id": job_id, "status": self.polled.pop(0)}


def test_follow_uses_the_event_stream_and_polls_when_it_breaks() -> None:
    from hilum.client.errors import Unreachable
    from hilum.client.follow import snapshots

    streamed = FakeJobs(["queued", "running", "succeeded"], [])
    assert [s["status"] for s in snapshots(streamed, "j", poll_s=0)] == ["queued", "running", "succeeded"]  # type: ignore[arg-type]
    assert streamed.gets == 0

    broken = FakeJobs(["running"], ["running", "failed"], breaks=Unreachable("stream dropped"))
    assert [s["status"] for s in snapshots(broken, "j", poll_s=0)] == ["running", "running", "failed"]  # type: ignore[arg-type]
    assert broken.gets == 2

    refused = FakeJobs([], [], breaks=ApiError(404, "job 'j' not found", method="GET", url="u"))
    with pytest.raises(ApiError):
        list(snapshots(refused, "j", poll_s=0))  # type: ignore[arg-type]


def test_predict_rows_show_uncertainty_and_ood_flags() -> None:
    from rich.console import Console

    from hilum.client.commands.predict import heatmap_paths, pop_heatmap, render_results

    answer = {
        "model": "pneumonia",
        "version": 3,
        "label": None,
        "label_withheld": True,
        "probabilities": {"NORMAL": 0.41, "PNEUMONIA": 0.59},
        "positive_class": "PNEUMONIA",
        "prediction_set": ["NORMAL", "PNEUMONIA"],
        "in_distribution": False,
        "ood_score": 88.2,
        "warnings": ["this film looks unlike the training films"],
        "heatmap": {"class_name": "PNEUMONIA", "png_base64": "iVBORw0KGgo=", "width": 4, "height": 4},
    }
    assert pop_heatmap(answer) == b"\x89PNG\r\n\x1a\n" and "png_base64" not in answer["heatmap"]  # type: ignore[operator]
    console = Console(width=250, record=True, markup=False)
    rows = [{"file": "a.dcm", "ok": True, "prediction": answer, "error": None}]
    rows.append({"file": "b.txt", "ok": False, "prediction": None, "error": "cannot use this file: [not an image]"})
    render_results(console, rows, heatmaps=False)
    text = console.export_text()
    assert "(withheld)" in text and "PNEUMONIA 0.590" in text and "pneumonia v3" in text
    assert "uncertain: {NORMAL, PNEUMONIA}" in text and "out of distribution (score 88.2)" in text
    assert "a.dcm: this film looks unlike the training films" in text
    assert "cannot use this file: [not an image]" in text and "1 of 2 files refused" in text
    names = heatmap_paths([Path("x/a.png"), Path("y/a.png"), Path("b.dcm")], Path("out"))
    assert names == [Path("out/a.png.heatmap.png"), Path("out/a.png-2.heatmap.png"), Path("out/b.dcm.heatmap.png")]


def test_the_client_never_imports_service_code_nor_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hilum.cli; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('service', 'worker', 'torch', 'fastapi')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
