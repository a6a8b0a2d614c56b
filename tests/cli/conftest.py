"""Helpers for driving the `hilum` client commands: a real subprocess, or typer's CliRunner in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import REPO

HILUM = Path(sys.executable).parent / "hilum"  # the console script installed in the venv


def client_env(config_home: Path, *, url: str | None = None, key: str | None = None) -> dict[str, str]:
    """The environment of a client run: no server settings, its own config folder, wide tables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HILUM_")}
    env.update(XDG_CONFIG_HOME=str(config_home), COLUMNS="200", PYTHONUNBUFFERED="1")
    if url:
        env["HILUM_URL"] = url
    if key:
        env["HILUM_KEY"] = key
    return env


def run_hilum(
    *args: str, env: Mapping[str, str], input: str | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """`hilum ARGS` as a real subprocess (the installed console script)."""
    cmd = [str(HILUM)] if HILUM.exists() else [sys.executable, "-m", "hilum.cli"]
    return subprocess.run(
        [*cmd, *args], env=dict(env), cwd=REPO, input=input, capture_output=True, text=True, timeout=timeout
    )


def invoke(*args: str, env: Mapping[str, str | None], input: str | None = None):  # type: ignore[no-untyped-def]
    """`hilum ARGS` in-process (typer's CliRunner); ``env`` is applied on top of os.environ."""
    from hilum.cli import app

    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("HILUM_")}
    return CliRunner().invoke(app, list(args), env={**unset, **env}, input=input, catch_exceptions=False)
