"""Safe zip handling: refuse hostile archives from the central directory alone, read members with a cap.

Nothing is ever extracted to disk by name: members are read into memory one at a
time (bounded by ``max_member_bytes``), so path tricks cannot write anywhere.
They are still refused, because an archive built with them is not a dataset.
"""

from __future__ import annotations

import logging
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

SKIPPED_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db"})
SKIPPED_DIRS = frozenset({"__macosx"})
# The compression-ratio rule applies to each member of at least 1 MiB, and to the archive's total
# (sum of uncompressed / sum of compressed sizes) once it unpacks to at least 1 MiB: many small
# members of zeros are a zip bomb too.
RATIO_MIN_BYTES = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int = 100_000
    max_total_bytes: int = 20 * 2**30
    max_member_bytes: int = 512 * 2**20
    max_ratio: float = 200.0


class ArchiveRejected(ValueError):
    """The whole archive is refused; ``str(exc)`` names the problem."""


@dataclass(frozen=True)
class ArchiveEntry:
    name: str  # normalised posix relative path inside the zip
    size: int  # uncompressed size from the central directory (not trusted when reading)
    raw_name: str = field(default="", compare=False)  # the name exactly as stored in the zip


def is_skipped(name: str) -> bool:
    """Hidden and system files that are ignored silently: __MACOSX/, .DS_Store, Thumbs.db, dot-files."""
    parts = [p for p in name.split("/") if p]
    if not parts:
        return True
    if any(p.lower() in SKIPPED_DIRS or p.startswith(".") for p in parts):
        return True
    return parts[-1].lower() in SKIPPED_NAMES


def _normalise(raw: str) -> str:
    """Validate a member name and return it as a clean relative posix path; raise ArchiveRejected."""
    if "\x00" in raw:
        raise ArchiveRejected(f"the zip contains a file name with a NUL character: {raw!r}")
    if "\\" in raw:
        raise ArchiveRejected(f"the zip contains a Windows-style path with backslashes: {raw!r}")
    if raw.startswith("/"):
        raise ArchiveRejected(f"the zip contains an absolute path: {raw!r}")
    if _DRIVE.match(raw):
        raise ArchiveRejected(f"the zip contains a path with a drive letter: {raw!r}")
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveRejected(f"the zip contains a path that points outside the archive ('..'): {raw!r}")
    return "/".join(parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


def scan_archive(path: Path, limits: ArchiveLimits) -> list[ArchiveEntry]:
    """List the usable files of a zip from its central directory, refusing unsafe archives.

    Directories and hidden/system files are skipped. Raises ArchiveRejected naming the problem.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        log.info("not a readable zip: %s", exc)
        raise ArchiveRejected("the upload is not a zip file (or the zip is damaged)") from None

    entries: list[ArchiveEntry] = []
    seen: set[str] = set()
    total = 0
    total_compressed = 0
    for info in infos:
        name = _normalise(info.filename)
        if _is_symlink(info):
            raise ArchiveRejected(f"the zip contains a symbolic link, which is not allowed: {name!r}")
        if info.is_dir() or not name or is_skipped(name):
            continue
        if info.flag_bits & 0x1:
            raise ArchiveRejected(f"the zip is password-protected (encrypted file {name!r}); upload it unencrypted")
        if name in seen:
            raise ArchiveRejected(f"the zip lists the file {name!r} more than once")
        seen.add(name)
        if len(entries) + 1 > limits.max_files:
            raise ArchiveRejected(f"the zip contains more than {limits.max_files:,} files")
        if info.file_size > limits.max_member_bytes:
            raise ArchiveRejected(
                f"the file {name!r} is {info.file_size:,} bytes; the limit per file is {limits.max_member_bytes:,}"
            )
        if info.file_size >= RATIO_MIN_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ArchiveRejected(
                f"the file {name!r} is compressed more than {limits.max_ratio:g}:1 (looks like a zip bomb)"
            )
        total += info.file_size
        total_compressed += info.compress_size
        if total > limits.max_total_bytes:
            raise ArchiveRejected(f"the zip unpacks to more than {limits.max_total_bytes:,} bytes, over the limit")
        entries.append(ArchiveEntry(name=name, size=info.file_size, raw_name=info.filename))
    if not entries:
        raise ArchiveRejected("the zip contains no usable files")
    if total >= RATIO_MIN_BYTES and total > limits.max_ratio * max(total_compressed, 1):
        raise ArchiveRejected(
            f"the zip as a whole unpacks {total / max(total_compressed, 1):.0f}:1 ({total:,} bytes from "
            f"{total_compressed:,}), more than {limits.max_ratio:g}:1 (looks like a zip bomb)"
        )
    return entries


def read_entry(zf: zipfile.ZipFile, entry: ArchiveEntry, limits: ArchiveLimits) -> bytes:
    """Read one member into memory, refusing more than its declared size or ``max_member_bytes``.

    A damaged member raises ``zipfile.BadZipFile`` (CRC or stream error); a member whose
    data is longer than its header claims raises ArchiveRejected.
    """
    cap = min(entry.size, limits.max_member_bytes)
    with zf.open(entry.raw_name or entry.name) as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise ArchiveRejected(f"the file {entry.name!r} is larger than its zip header says")
    return data
