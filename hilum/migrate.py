"""Apply the Alembic migrations that ship inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from hilum.db import get_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def upgrade_to_head(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (idempotent)."""
    cfg = alembic_config(url)
    engine = get_engine(url)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Several processes may start at once: serialise their migrations.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(72340172)")
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
