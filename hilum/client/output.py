"""How commands speak: tables and summaries on stdout, progress and messages on stderr, or JSON only.

With ``--json`` a command writes exactly one JSON document on stdout (an ``{"error": ...}`` object when it
fails) and nothing else there; progress bars are off.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from hilum.client.api import HilumClient
from hilum.client.config import ClientSettings, resolve
from hilum.client.errors import ClientError, Exit


class Ctx:
    """What one command invocation needs: output mode, consoles and a lazily built API client."""

    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        self.out = Console(highlight=False, markup=False)  # server text is shown as is, never as markup
        self.err = Console(stderr=True, highlight=False)
        self._client: HilumClient | None = None
        self.exit_code: int = Exit.OK

    def client(self) -> HilumClient:
        if self._client is None:
            conn = resolve(ClientSettings())
            self._client = HilumClient(conn.url, conn.key)
        return self._client

    def emit(self, data: Any, render: Callable[[Console], None]) -> None:
        """The command's result: JSON on stdout with ``--json``, else ``render`` for people."""
        if self.json:
            sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
            sys.stdout.flush()
        else:
            render(self.out)

    def note(self, message: str, *, markup: bool = False) -> None:
        """A message for people on stderr (silent with ``--json``); ``markup`` only for our own text."""
        if not self.json:
            self.err.print(message, markup=markup, highlight=False)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@contextmanager
def command(json_mode: bool) -> Iterator[Ctx]:
    """Run a command body; a ``ClientError`` becomes its message (or JSON) and its exit code."""
    ctx = Ctx(json_mode)
    try:
        yield ctx
    except ClientError as exc:
        if json_mode:
            sys.stdout.write(json.dumps(exc.to_json()) + "\n")
        ctx.err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        ctx.err.print("interrupted", highlight=False)
        raise typer.Exit(int(Exit.INTERRUPTED)) from None
    finally:
        ctx.close()
    if ctx.exit_code:
        raise typer.Exit(ctx.exit_code)


def fmt_float(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def fmt_seconds(value: Any) -> str:
    if value is None:
        return "-"
    s = int(round(float(value)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_time(value: Any) -> str:
    return "-" if not value else str(value).replace("T", " ")[:19]
