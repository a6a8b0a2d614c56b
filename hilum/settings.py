"""The one settings object: environment variables with a ``HILUM_`` prefix (and ``.env``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_PATIENT_SALT = "hilum-development-salt"


class Settings(BaseSettings):
    """Runtime configuration of the API, the worker and the launcher."""

    model_config = SettingsConfigDict(env_prefix="HILUM_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("var")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite file in data_dir")
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HILUM_REDIS_URL", "REDIS_URL"),
        description="Celery broker; unset: `hilum run` starts an embedded Redis",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    bootstrap_admin_key: str | None = None
    patient_salt: str = DEV_PATIENT_SALT

    max_upload_bytes: int = 8 * 2**30
    max_image_bytes: int = 64 * 2**20
    max_image_side: int = 512
    archive_max_files: int = 100_000
    archive_max_total_bytes: int = 32 * 2**30
    archive_max_ratio: float = 200.0
    archive_max_member_bytes: int = 512 * 2**20

    job_max_attempts: int = 3
    job_lease_s: float = 60.0
    broker_visibility_timeout_s: int = 3600
    broker_restore_interval_s: int = 10
    broker_key_prefix: str = Field("", description="prefix of every broker key, to share one Redis database")
    worker_queues: str = "gpu,ingest"
    worker_concurrency: int = 1
    worker_gpus: str = Field("", description='"" (CPU), "auto" (every CUDA device) or e.g. "0,1": one worker each')
    model_cache_size: int = 4
    model_cache_mb: int = 2048
    micro_batching: bool = True
    batch_max_size: int = 16
    batch_max_wait_ms: float = 5.0
    batch_max_files: int = 64
    progress_interval_s: float = 1.0

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Settings:
        if self.env == "production" and self.patient_salt == DEV_PATIENT_SALT:
            raise ValueError("HILUM_PATIENT_SALT must be set to a secret value in production")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hilum.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built on first use (never at import)."""
    return Settings()
