"""The bootstrap admin key: a revoked one stays revoked and start-up goes on; production wants a long one."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import ValidationError

from hilum.db import session_scope
from hilum.keys import find_active_key, hash_key
from hilum.launcher import prepare
from hilum.settings import Settings
from hilum.tables import ApiKey
from service.app import create_app
from tests.conftest import REDIS_HOST

BOOTSTRAP = "hk_bootstrap_" + "x" * 24


@pytest.fixture
def settings(tmp_path: Path, redis_available: None) -> Iterator[Settings]:
    prefix = f"hilum-bootstrap-{secrets.token_hex(4)}:"
    yield Settings(
        _env_file=None,
        env="test",
        data_dir=tmp_path / "data",
        redis_url=f"{REDIS_HOST}/13",
        broker_key_prefix=prefix,
        bootstrap_admin_key=BOOTSTRAP,
        rate_limit_enabled=False,
    )
    client = redis.Redis.from_url(f"{REDIS_HOST}/13")
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_revoked_bootstrap_key_stays_revoked_and_start_up_says_so(settings: Settings) -> None:
    admin = {"Authorization": f"Bearer {BOOTSTRAP}"}
    with TestClient(create_app(settings)) as client:
        other = client.post("/v1/keys", json={"name": "ops", "role": "admin"}, headers=admin)
        assert other.status_code == 201, other.text
        ops = {"Authorization": f"Bearer {other.json()['key']}"}
        keys = client.get("/v1/keys", headers=ops).json()
        bootstrap_id = next(k["id"] for k in keys if k["name"] == "bootstrap-admin")
        assert client.delete(f"/v1/keys/{bootstrap_id}", headers=ops).status_code == 200
        assert client.get("/v1/keys", headers=admin).status_code == 401

    app = create_app(settings)  # the API starts again with the same setting
    records = Records()
    logging.getLogger("hilum.keys").addHandler(records)  # after create_app, which configures logging
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/keys", headers=admin).status_code == 401
        assert client.get("/v1/keys", headers=ops).status_code == 200
    prepare(settings)  # `hilum run` starts too
    logging.getLogger("hilum.keys").removeHandler(records)
    said = [m for m in records.messages if "HILUM_BOOTSTRAP_ADMIN_KEY" in m and "is revoked" in m]
    assert len(said) == 2, records.messages  # the API's start-up and the launcher's
    with session_scope(settings.resolved_database_url) as session:
        rows = session.query(ApiKey).filter(ApiKey.key_hash == hash_key(BOOTSTRAP)).all()
        assert len(rows) == 1 and rows[0].revoked_at is not None
        assert find_active_key(session, BOOTSTRAP) is None


def test_production_refuses_a_short_bootstrap_key() -> None:
    with pytest.raises(ValidationError, match="HILUM_BOOTSTRAP_ADMIN_KEY"):
        Settings(_env_file=None, env="production", patient_salt="s3cret", bootstrap_admin_key="hk_" + "a" * 28)
    long_enough = Settings(_env_file=None, env="production", patient_salt="s3cret", bootstrap_admin_key="k" * 32)
    assert long_enough.bootstrap_admin_key == "k" * 32
    assert Settings(_env_file=None, env="development", bootstrap_admin_key="hk_short").bootstrap_admin_key


def test_an_expired_admin_key_does_not_count_as_an_admin(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from hilum.keys import Role, create_key, ensure_bootstrap_admin
    from hilum.migrate import upgrade_to_head

    url = f"sqlite:///{tmp_path / 'k.db'}"
    upgrade_to_head(url)
    with session_scope(url) as session:
        row, _ = create_key(session, name="old-admin", role=Role.admin)
        row.expires_at = datetime.now(UTC) - timedelta(minutes=1)
    with session_scope(url) as session:
        generated = ensure_bootstrap_admin(session, None)
    assert generated is not None  # otherwise nobody could administer this Hilum any more
    with session_scope(url) as session:
        assert find_active_key(session, generated) is not None
        assert ensure_bootstrap_admin(session, None) is None  # the new one counts


def test_a_generated_admin_key_goes_to_a_private_file_never_to_the_logs(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    import stat

    no_key = settings.model_copy(update={"bootstrap_admin_key": None})
    with TestClient(create_app(no_key)):  # the app's own log handler writes to stderr
        pass
    logs = "".join(capfd.readouterr())
    key_file = no_key.data_dir / "initial-admin-key"
    plain = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert plain.startswith("hk_") and plain not in logs and "initial-admin-key" in logs
    with session_scope(no_key.resolved_database_url) as session:
        assert find_active_key(session, plain) is not None
