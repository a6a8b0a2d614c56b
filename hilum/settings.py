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
    # Issue 11: request bodies and image decoding are bounded (service/guard.py, pipelines/imaging.py).
    max_json_bytes: int = Field(1 * 2**20, ge=1024, description="cap of any other /v1 request body (413)")
    max_batch_bytes: int = Field(256 * 2**20, ge=1024, description="cap of one predict/batch request body (413)")
    max_image_pixels: int = Field(
        40_000_000, ge=1_000_000, description="width x height (x frames) refused from the header (~6300 x 6300)"
    )
    decode_concurrency: int = Field(4, ge=1, description="images the API decodes at once (bounds decode memory)")
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
    api_workers: int = Field(1, ge=1, description="API processes `hilum run` starts (each loads its own models)")
    serving_device: str = Field("auto", description='"auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N"')
    serving_precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description='"auto": fp16 on CUDA, fp32 on the CPU'
    )
    model_cache_gpu_fraction: float = Field(0.5, gt=0, le=1, description="share of GPU memory cached models may hold")
    micro_batching: bool = True
    batch_max_size: int | None = Field(None, ge=1, description="micro-batch cap; default 64 on CUDA, 16 on the CPU")
    batch_max_wait_ms: float = 5.0
    batch_max_files: int = 64
    progress_interval_s: float = 1.0
    # Issue 11 (recovery, PHI): see hilum/recovery.py.
    recovery_interval_s: float = Field(
        30.0, ge=0, description="how often the API re-queues lost work (0: only at start-up)"
    )
    upload_retention_hours: float = Field(
        0.0, ge=0, description="keep raw uploads this long after ingestion (0: delete at once)"
    )

    # Operations (issue 13): logs, readiness, metrics, key lifecycle, rate limits.
    log_format: Literal["console", "json"] = Field("console", description='"json": one JSON object per line')
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR")
    ready_min_free_mb: int = Field(1024, ge=0, description="/readyz fails below this free space in data_dir")
    ready_worker_timeout_s: float = Field(1.0, gt=0, description="how long /readyz waits for workers to answer")
    ready_cache_s: float = Field(5.0, ge=0, description="how long /readyz reuses its worker answer")
    metrics_db_cache_s: float = Field(5.0, ge=0, description="how long /metrics reuses its job/dataset counts")
    worker_metrics_port: int | None = Field(
        None, description="each worker process main process serves /metrics from this port on; unset: none"
    )
    key_last_used_interval_s: float = Field(60.0, ge=0, description="last_used_at is written at most this often")
    rate_limit_enabled: bool = True
    rate_limit_predictions: str = Field("600/minute", description="per key: N/second, N/minute or N/hour")
    rate_limit_uploads: str = Field("60/minute", description="per key, dataset and weights uploads")
    rate_limit_jobs: str = Field("120/minute", description="per key, training job creation")

    # Web app (issue 10): sign-in sessions.
    web_session_ttl_s: int = Field(8 * 3600, ge=60, description="a web sign-in lasts this long, then asks again")
    web_cookie_secure: bool = Field(False, description="mark the session cookie Secure (set behind HTTPS)")

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> Settings:
        if self.env == "production" and self.patient_salt == DEV_PATIENT_SALT:
            raise ValueError("HILUM_PATIENT_SALT must be set to a secret value in production")
        if self.env == "production" and self.bootstrap_admin_key and len(self.bootstrap_admin_key) < 32:
            raise ValueError("HILUM_BOOTSTRAP_ADMIN_KEY must be at least 32 characters in production")
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
