from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hilum.settings import Settings


def test_defaults_are_embedded(tmp_path: Path) -> None:
    s = Settings(_env_file=None, data_dir=tmp_path)
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / 'hilum.db').resolve()}"
    assert s.port == 8000


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HILUM_PORT", "9123")
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/3")
    s = Settings(_env_file=None)
    assert s.port == 9123 and s.redis_url == "redis://example:6379/3"


def test_production_refuses_the_development_salt() -> None:
    with pytest.raises(ValidationError, match="HILUM_PATIENT_SALT"):
        Settings(_env_file=None, env="production")
    assert Settings(_env_file=None, env="production", patient_salt="s3cret").env == "production"
