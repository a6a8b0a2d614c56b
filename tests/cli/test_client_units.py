"""The client's pure parts: config file, exit codes, SSE parsing, the streamed multipart body; no server."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
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
    for command in ("login", "logout", "datasets", "jobs", "models", "sweeps", "predict"):
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


# ---- issue 12: recipe, warm start, sweeps, import, TTA (request bodies checked against a mock transport) ----


class MockApi:
    """Every request the client sends, answered from ``routes`` ((method, path) -> body, (status, body), or a
    callable taking the request); installed where commands build their client."""

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.routes[(request.method, request.url.path)]
        if callable(answer):
            answer = answer(request)
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        return httpx.Response(status, json=body)

    def bodies(self, method: str, path: str) -> list[Any]:
        return [json.loads(r.content) for r in self.requests if (r.method, r.url.path) == (method, path)]


@pytest.fixture
def mock_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., tuple[MockApi, dict[str, str]]]:
    from hilum.client.api import HilumClient

    def install(routes: dict[tuple[str, str], Any]) -> tuple[MockApi, dict[str, str]]:
        api = MockApi(routes)

        def build(url: str, key: str, **kwargs: Any) -> HilumClient:
            return HilumClient(url, key, transport=httpx.MockTransport(api))

        monkeypatch.setattr("hilum.client.output.HilumClient", build)
        return api, client_env(tmp_path, url="http://hilum.test", key="hk_x")

    return install


def job_answer(request: httpx.Request) -> tuple[int, dict]:
    spec = json.loads(request.content)
    return 202, {
        "id": "j1",
        "dataset_id": spec["dataset_id"],
        "status": "queued",
        "model_name": spec.get("model_name", "pneumonia"),
        "spec": {"backbone": spec.get("backbone", "test_resnet"), **spec},
        "weights": spec.get("weights", "none"),
        "init_from": spec.get("init_from"),
        "created_at": "2026-01-31T09:15:00Z",
    }


JOBS = {("POST", "/v1/jobs"): job_answer}


def test_jobs_create_sends_only_the_fields_given(mock_api: Callable[..., tuple[MockApi, dict[str, str]]]) -> None:
    api, env = mock_api(JOBS)
    assert invoke("jobs", "create", "--dataset", "d1", "--json", env=env).exit_code == 0
    recipe = [
        *("--augment", "basic", "--label-smoothing", "0.05", "--no-ema", "--early-stopping-patience", "4"),
        *("--early-stopping-metric", "auroc", "--sensitivity-confidence", "0.9"),
    ]
    result = invoke("jobs", "create", "--dataset", "d1", "--backbone", "test_resnet", *recipe, env=env)
    assert result.exit_code == 0, result.output
    other = ["--ema-decay", "0.99", "--no-early-stopping", "--strategy", "full", "--epochs", "3", "--json"]
    assert invoke("jobs", "create", "--dataset", "d1", *other, env=env).exit_code == 0
    plain, with_recipe, ema_on = api.bodies("POST", "/v1/jobs")
    required = {"dataset_id": "d1", "strategy": "gradual", "epochs": 10}
    assert plain == {**required, "backbone": "resnet18", "weights": "none"}  # the server's defaults do the rest
    assert with_recipe == {
        **required,
        "backbone": "test_resnet",
        "weights": "none",
        "augment": "basic",
        "label_smoothing": 0.05,
        "ema_decay": None,  # --no-ema: off, not the server's default
        "early_stopping_patience": 4,
        "early_stopping_metric": "auroc",
        "sensitivity_confidence": 0.9,
    }
    assert ema_on == {
        "dataset_id": "d1",
        "backbone": "resnet18",
        "weights": "none",
        "strategy": "full",
        "epochs": 3,
        "ema_decay": 0.99,
        "early_stopping_patience": None,  # --no-early-stopping
    }
    assert "random weights" in result.stderr
    assert "recipe: augment basic, label smoothing 0.05, no EMA, early stopping after 4 (auroc)" in result.stdout


def test_init_from_sends_the_warm_start_and_no_weights(mock_api: Callable[..., tuple[MockApi, dict[str, str]]]) -> None:
    api, env = mock_api(JOBS)
    args = ["--init-from", "site-b.pneumonia:12", "--class-map", "OPACITY=PNEUMONIA", "--class-map", "COVID="]
    result = invoke("jobs", "create", "--dataset", "d1", *args, env=env)
    assert result.exit_code == 0, result.output
    result_json = invoke("jobs", "create", "--dataset", "d1", "--init-from", "pneumonia:3", "--json", env=env)
    assert result_json.exit_code == 0, result_json.output
    mapped, plain = api.bodies("POST", "/v1/jobs")
    assert mapped == {
        "dataset_id": "d1",
        "strategy": "gradual",
        "epochs": 10,
        "init_from": {"model": "site-b.pneumonia", "version": 12, "class_map": {"OPACITY": "PNEUMONIA", "COVID": None}},
    }  # no backbone (the version's) and no weights (a warm start is not random weights)
    assert plain == {
        "dataset_id": "d1",
        "strategy": "gradual",
        "epochs": 10,
        "init_from": {"model": "pneumonia", "version": 3},
    }
    assert "random weights" not in result.stderr and "warm-started from site-b.pneumonia:12" in result.stderr
    assert "warm start: site-b.pneumonia v12 (classes OPACITY <- PNEUMONIA, COVID <- (fresh row))" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--init-from", "pneumonia"], "expected MODEL:VERSION"),
        (["--init-from", "pneumonia:"], "expected MODEL:VERSION"),
        (["--init-from", ":3"], "expected MODEL:VERSION"),
        (["--init-from", "pneumonia:v3"], "expected MODEL:VERSION"),
        (["--init-from", "pneumonia:0"], "expected MODEL:VERSION"),
        (["--init-from", "pneumonia:3", "--class-map", "OPACITY"], "expected NEW=OLD"),
        (["--init-from", "pneumonia:3", "--class-map", "=PNEUMONIA"], "expected NEW=OLD"),
        (["--init-from", "pneumonia:3", "--class-map", "A=B", "--class-map", "A=C"], "mapped twice"),
        (["--class-map", "OPACITY=PNEUMONIA"], "needs --init-from"),
        (["--ema-decay", "0.9", "--no-ema"], "not both"),
        (["--early-stopping-patience", "2", "--no-early-stopping"], "not both"),
        (["--augment", "flip"], "flip"),
    ],
)
def test_bad_job_options_are_usage_errors(
    mock_api: Callable[..., tuple[MockApi, dict[str, str]]], args: list[str], words: str
) -> None:
    api, env = mock_api(JOBS)
    result = invoke("jobs", "create", "--dataset", "d1", *args, env=env)
    assert result.exit_code == Exit.USAGE and words in result.stderr, result.output
    assert api.requests == []  # refused before anything is sent


def sweep(status: str, members: list[dict], **over: Any) -> dict:
    body = {
        "id": "s1",
        "dataset_id": "d1",
        "model_name": "sw",
        "status": status,
        "members": members,
        "skipped": [],
        "best_job_id": None,
        "model_version": None,
        "error": None,
        "cancel_requested": False,
        "request": {"epochs": 3, "budget": {"max_jobs": 2, "max_total_epochs": None, "max_minutes": None}},
        "created_at": "2026-01-31T09:15:00Z",
        "deadline_at": None,
        "finished_at": None,
    }
    return {**body, **over}


def member(job: str, size: int, status: str, auroc: float | None = None, best: bool = False) -> dict:
    config = {"backbone": "test_resnet", "strategy": "full", "image_size": size}
    return {
        "job_id": job,
        "config": config,
        "status": status,
        "val_auroc": auroc,
        "val_auroc_ci95": [auroc - 0.1, min(1.0, auroc + 0.05)] if auroc is not None else None,
        "val_loss": 0.4 if auroc is not None else None,
        "seconds": 12.5 if status == "succeeded" else None,
        "best_epoch": 3 if auroc is not None else None,
        "error": None,
        "best": best,
    }


def test_sweeps_create_sends_the_grid_and_budget(mock_api: Callable[..., tuple[MockApi, dict[str, str]]]) -> None:
    created = sweep("queued", [member("j1", 128, "queued"), member("j2", 224, "queued")])
    api, env = mock_api({("POST", "/v1/sweeps"): (202, created)})
    args = [
        *("sweeps", "create", "--dataset", "d1", "--backbone", "test_resnet", "--backbone", "resnet18"),
        *("--strategy", "full", "--strategy", "frozen", "--image-size", "128", "--image-size", "224"),
        *("--epochs", "3", "--max-jobs", "2", "--max-total-epochs", "9", "--max-minutes", "30"),
        *("--model-name", "sw", "--lr", "0.01", "--weights", "imagenet", "--idempotency-key", "k1", "--json"),
    ]
    result = invoke(*args, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == "s1"
    minimal = invoke(
        "sweeps", "create", "--dataset", "d1", "--backbone", "b", "--strategy", "full", "--epochs", "1", env=env
    )
    assert minimal.exit_code == 0, minimal.output
    full, small = api.bodies("POST", "/v1/sweeps")
    assert full == {
        "dataset_id": "d1",
        "backbones": ["test_resnet", "resnet18"],
        "strategies": ["full", "frozen"],
        "image_sizes": [128, 224],
        "epochs": 3,
        "budget": {"max_jobs": 2, "max_total_epochs": 9, "max_minutes": 30},
        "model_name": "sw",
        "lr": 0.01,
        "weights": "imagenet",
    }
    assert api.requests[0].headers["Idempotency-Key"] == "k1"
    assert small == {"dataset_id": "d1", "backbones": ["b"], "strategies": ["full"], "epochs": 1}  # server defaults
    assert "random weights" in minimal.stderr and "random weights" not in result.stderr
    assert invoke("sweeps", "create", "--dataset", "d1", "--backbone", "b", "--epochs", "1", env=env).exit_code == 2


def test_sweeps_follow_polls_until_the_sweep_ends(
    mock_api: Callable[..., tuple[MockApi, dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hilum.client.commands import sweeps

    monkeypatch.setattr(sweeps, "POLL_S", 0.0)
    snapshots = [
        sweep("running", [member("j1", 32, "running"), member("j2", 48, "queued")]),
        sweep("running", [member("j1", 32, "succeeded", 0.81), member("j2", 48, "running")]),
        sweep(
            "succeeded",
            [member("j1", 32, "succeeded", 0.81), member("j2", 48, "succeeded", 0.93, best=True)],
            skipped=[{"backbone": "test_resnet", "strategy": "gradual", "image_size": 64}],
            best_job_id="j2",
            model_version=4,
            finished_at="2026-01-31T09:26:00Z",
        ),
    ]
    created = sweep("queued", [member("j1", 32, "queued"), member("j2", 48, "queued")])
    api, env = mock_api({("POST", "/v1/sweeps"): (202, created), ("GET", "/v1/sweeps/s1"): lambda r: snapshots.pop(0)})
    args = ["sweeps", "create", "--dataset", "d1", "--backbone", "test_resnet", "--strategy", "full", "--epochs", "3"]
    result = invoke(*args, "--image-size", "32", "--image-size", "48", "--follow", env=env)
    assert result.exit_code == 0, result.output
    assert [r.url.path for r in api.requests] == ["/v1/sweeps", *["/v1/sweeps/s1"] * 3] and not snapshots
    assert "member test_resnet full 32 px: succeeded, val AUROC 0.810" in result.stderr
    out = result.stdout
    assert "sweep s1: succeeded" in out and "registered: model 'sw' version 4" in out
    best_row = next(line for line in out.splitlines() if "48 px" in line)
    assert "*" in best_row and "0.930" in best_row and "0.400" in best_row and "12.5" in best_row
    assert "skipped by the budget: test_resnet gradual 64 px" in out

    failed = sweep("failed", [member("j1", 32, "failed")], error="no member succeeded")
    api, env = mock_api({("POST", "/v1/sweeps"): (202, created), ("GET", "/v1/sweeps/s1"): failed})
    result = invoke(*args, "--follow", "--json", env=env)
    assert result.exit_code == Exit.FAILED and json.loads(result.stdout)["error"] == "no member succeeded"


def test_sweeps_list_show_and_cancel(mock_api: Callable[..., tuple[MockApi, dict[str, str]]]) -> None:
    done = sweep("succeeded", [member("j1", 32, "succeeded", 0.9, best=True)], best_job_id="j1", model_version=2)
    running = sweep("running", [member("j1", 32, "running")], cancel_requested=True, id="s2")
    api, env = mock_api(
        {
            ("GET", "/v1/sweeps"): [done],
            ("GET", "/v1/sweeps/s1"): done,
            ("POST", "/v1/sweeps/s2/cancel"): running,
            ("GET", "/v1/sweeps/nope"): (404, {"detail": "sweep 'nope' not found"}),
        }
    )
    listed = invoke("sweeps", "list", "--dataset", "d1", env=env)
    assert listed.exit_code == 0 and "sw v2" in listed.stdout and "1/1 ended" in listed.stdout
    assert api.requests[0].url.params["dataset_id"] == "d1"
    shown = invoke("sweeps", "show", "s1", env=env)
    assert shown.exit_code == 0 and "test_resnet full 32 px" in shown.stdout and "version 2" in shown.stdout
    cancelled = invoke("sweeps", "cancel", "s2", env=env)
    assert cancelled.exit_code == 0 and "sweep s2: running (cancel requested)" in cancelled.stdout
    missing = invoke("sweeps", "show", "nope", env=env)
    assert missing.exit_code == Exit.NOT_FOUND and "sweep 'nope' not found" in missing.stderr


def test_predict_tta_sends_tta_true(mock_api: Callable[..., tuple[MockApi, dict[str, str]]], tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> dict:
        tta = 5 if request.url.params.get("tta") == "true" else None
        return {"model": "pneumonia", "version": 3, "label": "NORMAL", "probabilities": {"NORMAL": 0.8}, "tta": tta}

    api, env = mock_api({("POST", "/v1/models/pneumonia/predict"): answer})
    film = tmp_path / "film.png"
    film.write_bytes(b"\x89PNG not really")
    with_tta = invoke("predict", str(film), "--tta", env=env)
    assert with_tta.exit_code == 0, with_tta.output
    assert invoke("predict", str(film), "--version", "3", env=env).exit_code == 0
    first, second = api.requests
    assert dict(first.url.params) == {"tta": "true"}
    assert dict(second.url.params) == {"version": "3"}  # off unless asked
    assert "pneumonia v3 (TTA x5)" in with_tta.stdout


def test_models_import_streams_the_artifact_and_model_name(
    mock_api: Callable[..., tuple[MockApi, dict[str, str]]], tmp_path: Path
) -> None:
    version = {
        "model_name": "site-b",
        "version": 1,
        "backbone": "test_resnet",
        "dataset_id": None,
        "job_id": None,
        "source": "imported:0123456789ab",
        "class_names": ["NORMAL", "PNEUMONIA"],
        "threshold": 0.42,
        "metrics": {"val": {"auroc": 0.9}},
        "created_at": "2026-01-31T09:15:00Z",
        "fit_for_use": True,
        "fitness_reasons": [],
    }
    api, env = mock_api({("POST", "/v1/models/import"): (201, version)})
    artifact = tmp_path / "model.pt"
    payload = os.urandom(5000)
    artifact.write_bytes(payload)
    result = invoke("models", "import", str(artifact), "--model-name", "site-b", env=env)
    assert result.exit_code == 0, result.output
    assert "imported model.pt as model 'site-b' version 1 (imported:0123456789ab)" in result.stdout
    [request] = api.requests
    content_type, boundary = request.headers["Content-Type"].split("; boundary=")
    assert content_type == "multipart/form-data" and int(request.headers["Content-Length"]) == len(request.content)
    parts = request.content.split(f"--{boundary}".encode())
    assert parts[1] == b'\r\nContent-Disposition: form-data; name="model_name"\r\n\r\nsite-b\r\n'
    assert parts[2] == (
        b'\r\nContent-Disposition: form-data; name="file"; filename="model.pt"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + payload + b"\r\n"
    )
    assert parts[3] == b"--\r\n"
    missing = invoke("models", "import", str(tmp_path / "nope.pt"), "--model-name", "site-b", env=env)
    assert missing.exit_code == Exit.USAGE and len(api.requests) == 1
