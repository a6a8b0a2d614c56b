"""Where the client finds its server: ``HILUM_URL`` / ``HILUM_KEY``, else the per-user config file.

The file (``$XDG_CONFIG_HOME/hilum/config.toml``, default ``~/.config/hilum/config.toml``) is written by
``hilum login`` with mode 0600 in a 0700 folder, so only its owner can read the key.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from hilum.client.errors import NotConfigured


class ClientSettings(BaseSettings):
    """The environment the client reads (its own object: the client shares nothing with the server)."""

    model_config = SettingsConfigDict(env_prefix="HILUM_", extra="ignore", populate_by_name=True)

    url: str | None = None
    key: str | None = None
    config_home: Path | None = Field(None, validation_alias=AliasChoices("XDG_CONFIG_HOME"))


@dataclass(frozen=True)
class Connection:
    """A server URL and the key to send it; ``source`` says where they came from."""

    url: str
    key: str
    source: str


def config_path(settings: ClientSettings | None = None) -> Path:
    settings = settings or ClientSettings()
    home = settings.config_home or Path.home() / ".config"
    return home / "hilum" / "config.toml"


def read_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text())
    return {k: str(v) for k, v in data.items() if k in ("url", "key")}


def write_file(path: Path, *, url: str, key: str) -> Path:
    """Write url and key; the file is created 0600 (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        # JSON strings are valid TOML basic strings.
        fh.write(f"# written by `hilum login`; keep it private\nurl = {json.dumps(url)}\nkey = {json.dumps(key)}\n")
    os.chmod(tmp, 0o600)  # whatever the umask did
    os.replace(tmp, path)
    return path


def remove_file(path: Path) -> bool:
    if path.exists():
        path.unlink()
        return True
    return False


def resolve(settings: ClientSettings | None = None) -> Connection:
    """The URL and key to use: environment first, then the config file; raise if either is missing."""
    settings = settings or ClientSettings()
    path = config_path(settings)
    stored = read_file(path)
    url = settings.url or stored.get("url")
    key = settings.key or stored.get("key")
    if not url or not key:
        missing = " and ".join(n for n, v in (("server URL", url), ("API key", key)) if not v)
        raise NotConfigured(f"no {missing}: run `hilum login URL` or set HILUM_URL and HILUM_KEY")
    source = "environment" if settings.url and settings.key else str(path)
    return Connection(url=normalise_url(url), key=key, source=source)


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url
