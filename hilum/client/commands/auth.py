"""`hilum login URL` and `hilum logout`."""

from __future__ import annotations

from typing import Annotated

import typer

from hilum.client.api import HilumClient
from hilum.client.commands.common import JsonOpt
from hilum.client.config import ClientSettings, config_path, normalise_url, remove_file, write_file
from hilum.client.output import command


def login(
    url: Annotated[str, typer.Argument(help="the Hilum server, e.g. http://hilum.hospital.local:8000")],
    key: Annotated[str | None, typer.Option(help="the API key (default: asked for, hidden)")] = None,
    json: JsonOpt = False,
) -> None:
    """Check a key against a server and store both in the per-user config file (mode 0600)."""
    with command(json) as ctx:
        url = normalise_url(url)
        if key is None:
            key = typer.prompt("API key", hide_input=True, err=True)
        key = key.strip()
        with HilumClient(url, key) as client:
            client.list_models()  # any role may list models: a refused key fails here (401)
        path = write_file(config_path(ClientSettings()), url=url, key=key)
        ctx.emit(
            {"url": url, "config": str(path)},
            lambda out: out.print(f"logged in to {url}; key stored in {path} (readable only by you)"),
        )


def logout(json: JsonOpt = False) -> None:
    """Forget the stored server and key."""
    with command(json) as ctx:
        path = config_path(ClientSettings())
        removed = remove_file(path)
        message = f"logged out (removed {path})" if removed else f"not logged in ({path} does not exist)"
        ctx.emit({"removed": removed, "config": str(path)}, lambda out: out.print(message))
