"""Logging for the API and the workers: console lines (default) or one JSON object per line.

Every record, ours and the libraries' (uvicorn, Celery), goes through one structlog formatter on the root
logger, so context bound with ``bind_context`` (the request id, a job or dataset id) lands on every line.
Log identifiers only: never a key, never patient data.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars, unbind_contextvars

from hilum.settings import Settings

__all__ = ["bind_context", "clear_context", "configure_logging", "unbind_context"]

bind_context = bind_contextvars
unbind_context = unbind_contextvars
clear_context = clear_contextvars

# Loggers that install their own handlers; they propagate to ours instead.
_THIRD_PARTY = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.redirected")


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]


def configure_logging(settings: Settings, *, process: str) -> None:
    """Route every log record to stderr as ``settings.log_format`` at ``settings.log_level``.

    ``process`` ("api", "worker") is added to each line. Safe to call more than once.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    pre_chain = [*_shared_processors(), _add_process(process)]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in _THIRD_PARTY:
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The API logs its own access line, with the request id and the route template.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    structlog.configure(
        processors=[*pre_chain, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _add_process(process: str) -> Any:
    def add(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("process", process)
        return event

    return add
