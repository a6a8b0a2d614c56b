"""Typed pipeline configs built from settings (pipelines never read settings themselves)."""

from __future__ import annotations

from hilum.settings import Settings
from pipelines.archive import ArchiveLimits
from pipelines.imaging import configure_decoding
from pipelines.ingest import IngestConfig


def ingest_config(settings: Settings) -> IngestConfig:
    """The ingestion config; also applies this process's pixel limit (``HILUM_MAX_IMAGE_PIXELS``)."""
    configure_decoding(max_pixels=settings.max_image_pixels)
    return IngestConfig(
        patient_salt=settings.patient_salt,
        source_key=settings.patient_salt,  # member paths are stored only as pseudonyms (issue 11)
        max_side=settings.max_image_side,
        limits=ArchiveLimits(
            max_files=settings.archive_max_files,
            max_total_bytes=settings.archive_max_total_bytes,
            max_ratio=settings.archive_max_ratio,
            max_member_bytes=settings.archive_max_member_bytes,
        ),
    )
