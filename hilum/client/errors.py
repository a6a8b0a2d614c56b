"""Client errors and the exit code each one ends the command with (documented in the README)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Exit(IntEnum):
    """Exit codes of the client commands."""

    OK = 0
    FAILED = 1  # the request worked but the outcome did not: a file refused, a job failed, nothing to roll back
    USAGE = 2  # bad command line (click's own code)
    NOT_CONFIGURED = 3  # no server URL or key: run `hilum login URL` or set HILUM_URL / HILUM_KEY
    UNAUTHORIZED = 4  # 401: the key was refused
    FORBIDDEN = 5  # 403: the key's role may not do this
    NOT_FOUND = 6  # 404
    CONFLICT = 7  # 409
    TOO_LARGE = 8  # 413
    INVALID = 9  # 400, 415, 422 and any other 4xx: the server's detail says why
    RATE_LIMITED = 10  # 429: see Retry-After
    SERVER = 11  # 5xx
    UNREACHABLE = 12  # connection refused, DNS failure, timeout
    INTERRUPTED = 130  # Ctrl-C


STATUS_EXITS = {
    401: Exit.UNAUTHORIZED,
    403: Exit.FORBIDDEN,
    404: Exit.NOT_FOUND,
    409: Exit.CONFLICT,
    413: Exit.TOO_LARGE,
    429: Exit.RATE_LIMITED,
}


class ClientError(Exception):
    """An error that ends a command with ``exit_code`` and a message for people."""

    exit_code: int = Exit.FAILED

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def to_json(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "exit_code": int(self.exit_code)}}


class NotConfigured(ClientError):
    exit_code = Exit.NOT_CONFIGURED


class Unreachable(ClientError):
    exit_code = Exit.UNREACHABLE


class ApiError(ClientError):
    """A non-2xx answer from the server."""

    def __init__(self, status: int, detail: str, *, method: str, url: str, retry_after: str | None = None) -> None:
        self.status, self.detail, self.retry_after = status, detail, retry_after
        super().__init__(describe(status, detail, retry_after), exit_code=exit_for_status(status))
        self.method, self.url = method, url

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["error"].update(status=self.status, detail=self.detail, retry_after=self.retry_after)
        return body


def exit_for_status(status: int) -> int:
    if status in STATUS_EXITS:
        return STATUS_EXITS[status]
    if status >= 500:
        return Exit.SERVER
    return Exit.INVALID


def describe(status: int, detail: str, retry_after: str | None) -> str:
    """One line for people: what the status means, then the server's own words."""
    prefix = {
        401: "key refused (401)",
        403: "your key's role may not do this (403)",
        404: "not found (404)",
        409: "conflict (409)",
        413: "too large for the server (413)",
        429: "too many requests (429)" + (f"; retry after {retry_after} s" if retry_after else ""),
    }.get(status)
    if prefix is None:
        prefix = f"server error ({status})" if status >= 500 else f"refused ({status})"
    return f"{prefix}: {detail}" if detail else prefix
