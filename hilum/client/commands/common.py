"""Options shared by every client command."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="machine output: one JSON document on stdout, nothing else")]
