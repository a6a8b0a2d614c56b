"""A small typed HTTP client for the Hilum ``/v1`` API (httpx); every non-2xx answer raises ``ApiError``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from hilum.client.errors import ApiError, Unreachable
from hilum.client.multipart import MultipartUpload
from hilum.client.sse import parse_events

JSON = dict[str, Any]


class HilumClient:
    """One server and one key. Use as a context manager so the connection pool is closed."""

    def __init__(self, url: str, key: str, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}", "User-Agent": "hilum-cli"},
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )

    def __enter__(self) -> HilumClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- plumbing -------------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        check(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def _unreachable(self, exc: httpx.TransportError) -> Unreachable:
        what = "timed out" if isinstance(exc, httpx.TimeoutException) else "connection failed"
        return Unreachable(f"cannot reach the Hilum server at {self.url}: {what} ({exc or type(exc).__name__})")

    # ---- datasets -------------------------------------------------------------------------------------
    def upload_dataset(self, path: Path, *, name: str | None, on_bytes: Callable[[int], None] = lambda n: None) -> JSON:
        """Stream ``path`` as multipart field ``file`` (never whole in memory); ``on_bytes`` gets each chunk's size."""
        with path.open("rb") as fh:
            body = MultipartUpload(fh, filename=path.name, fields={"name": name} if name else {}, on_bytes=on_bytes)
            headers = {"Content-Type": body.content_type, "Content-Length": str(body.content_length)}
            timeout = httpx.Timeout(None, connect=10.0)  # a large upload may take long
            return dict(self._json("POST", "/v1/datasets", content=body.stream(), headers=headers, timeout=timeout))

    def list_datasets(self, status: str | None = None) -> list[JSON]:
        return list(self._json("GET", "/v1/datasets", params=_drop_none(status=status)))

    def get_dataset(self, dataset_id: str) -> JSON:
        return dict(self._json("GET", f"/v1/datasets/{dataset_id}"))

    # ---- jobs -----------------------------------------------------------------------------------------
    def create_job(self, spec: JSON, *, idempotency_key: str | None = None) -> JSON:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(self._json("POST", "/v1/jobs", json=spec, headers=headers))

    def list_jobs(self, *, status: str | None = None, dataset_id: str | None = None, limit: int = 100) -> list[JSON]:
        params = _drop_none(status=status, dataset_id=dataset_id, limit=limit)
        return list(self._json("GET", "/v1/jobs", params=params))

    def get_job(self, job_id: str) -> JSON:
        return dict(self._json("GET", f"/v1/jobs/{job_id}"))

    def cancel_job(self, job_id: str) -> JSON:
        return dict(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def job_events(self, job_id: str) -> Iterator[JSON]:
        """Each ``job`` snapshot from the server-sent event stream, until ``end``."""
        timeout = httpx.Timeout(60.0, connect=10.0)  # the server sends a keep-alive every 15 s
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    check(response)
                for event, data in parse_events(response.iter_lines()):
                    if event == "end":
                        return
                    if event == "job":
                        yield dict(json.loads(data))
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    # ---- models ---------------------------------------------------------------------------------------
    def list_models(self) -> list[JSON]:
        return list(self._json("GET", "/v1/models"))

    def get_model(self, name: str) -> JSON:
        return dict(self._json("GET", f"/v1/models/{name}"))

    def alias_history(self, name: str) -> list[JSON]:
        return list(self._json("GET", f"/v1/models/{name}/aliases/history"))

    def set_alias(self, name: str, alias: str, version: int) -> JSON:
        return dict(self._json("PUT", f"/v1/models/{name}/aliases/{alias}", json={"version": version}))

    def import_model(self, path: Path, *, model_name: str, on_bytes: Callable[[int], None] = lambda n: None) -> JSON:
        """``POST /v1/models/import`` (admin): stream the artifact as multipart ``file`` with field ``model_name``."""
        with path.open("rb") as fh:
            body = MultipartUpload(fh, filename=path.name, fields={"model_name": model_name}, on_bytes=on_bytes)
            headers = {"Content-Type": body.content_type, "Content-Length": str(body.content_length)}
            timeout = httpx.Timeout(None, connect=10.0)  # the server loads and checks the artifact
            return dict(
                self._json("POST", "/v1/models/import", content=body.stream(), headers=headers, timeout=timeout)
            )

    def predict(
        self,
        model: str,
        fh: BinaryIO,
        filename: str,
        *,
        version: int | None,
        alias: str | None,
        heatmap: bool,
        tta: bool = False,
    ) -> JSON:
        params = _drop_none(
            version=version, alias=alias, heatmap="true" if heatmap else None, tta="true" if tta else None
        )
        return dict(self._json("POST", f"/v1/models/{model}/predict", params=params, files={"file": (filename, fh)}))

    # ---- sweeps ---------------------------------------------------------------------------------------
    def create_sweep(self, spec: JSON, *, idempotency_key: str | None = None) -> JSON:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(self._json("POST", "/v1/sweeps", json=spec, headers=headers))

    def list_sweeps(self, *, dataset_id: str | None = None, limit: int = 50) -> list[JSON]:
        return list(self._json("GET", "/v1/sweeps", params=_drop_none(dataset_id=dataset_id, limit=limit)))

    def get_sweep(self, sweep_id: str) -> JSON:
        return dict(self._json("GET", f"/v1/sweeps/{sweep_id}"))

    def cancel_sweep(self, sweep_id: str) -> JSON:
        return dict(self._json("POST", f"/v1/sweeps/{sweep_id}/cancel"))


def check(response: httpx.Response) -> None:
    """Raise ``ApiError`` with the server's detail for a non-2xx answer."""
    if response.is_success:
        return
    raise ApiError(
        response.status_code,
        detail_of(response),
        method=response.request.method,
        url=str(response.request.url),
        retry_after=response.headers.get("Retry-After"),
    )


def detail_of(response: httpx.Response) -> str:
    """The server's ``detail`` as one line (FastAPI validation errors become ``field: message; ...``)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", item)))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _drop_none(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
