"""Split into ``service.domain.registry`` (versions, aliases, thresholds, fitness) and
``service.domain.predictions`` (answering, logging). Only a re-export is left, for ``routes/preview.py``;
import ``read_upload`` from ``service.uploads`` and delete this module."""

from __future__ import annotations

from service.uploads import read_upload

__all__ = ["read_upload"]
