"""scan_archive refuses hostile zips from the central directory; read_entry caps what it reads."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from pipelines.archive import ArchiveEntry, ArchiveLimits, ArchiveRejected, is_skipped, read_entry, scan_archive

LIMITS = ArchiveLimits()


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]], deflate: bool = False) -> Path:
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def test_valid_zip_lists_files_with_sizes(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", [("NORMAL/a.png", b"x" * 10), ("PNEUMONIA/b.png", b"y" * 20), ("./c/d.png", b"z")])
    entries = scan_archive(z, LIMITS)
    assert [(e.name, e.size) for e in entries] == [("NORMAL/a.png", 10), ("PNEUMONIA/b.png", 20), ("c/d.png", 1)]
    assert entries[2].raw_name == "./c/d.png"


def test_hidden_and_system_files_and_dirs_skipped(tmp_path: Path) -> None:
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.mkdir("NORMAL")
        for name in [
            "NORMAL/a.png",
            "__MACOSX/NORMAL/._a.png",
            "NORMAL/.DS_Store",
            "NORMAL/Thumbs.db",
            "NORMAL/desktop.ini",
            ".hidden/x.png",
            "NORMAL/.secret.png",
        ]:
            zf.writestr(name, b"data")
    assert [e.name for e in scan_archive(z, LIMITS)] == ["NORMAL/a.png"]


@pytest.mark.parametrize(
    "name",
    ["NORMAL/a.png", "a/b/c.dcm", "x.png"],
)
def test_is_skipped_keeps_ordinary_files(name: str) -> None:
    assert not is_skipped(name)


@pytest.mark.parametrize(
    "name,reason",
    [
        ("../evil.png", r"outside the archive \('\.\.'\)"),
        ("NORMAL/../../evil.png", r"outside the archive"),
        ("/etc/passwd", "absolute path"),
        ("C:/Windows/evil.png", "drive letter"),
        ("..\\..\\evil.png", "backslashes"),
        ("NORMAL\\a.png", "backslashes"),
    ],
)
def test_path_tricks_refused(tmp_path: Path, name: str, reason: str) -> None:
    z = make_zip(tmp_path / "a.zip", [("NORMAL/ok.png", b"ok"), (zipfile.ZipInfo(name), b"evil")])
    with zipfile.ZipFile(z) as zf:
        assert name in zf.namelist()  # the hostile name really is in the archive
    with pytest.raises(ArchiveRejected, match=reason):
        scan_archive(z, LIMITS)


def test_symlink_entry_refused(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("NORMAL/link.png")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = make_zip(tmp_path / "a.zip", [("NORMAL/ok.png", b"ok"), (info, b"/etc/passwd")])
    with pytest.raises(ArchiveRejected, match="symbolic link"):
        scan_archive(z, LIMITS)


def test_encrypted_entry_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", [("NORMAL/a.png", b"pretend ciphertext")])
    raw = bytearray(z.read_bytes())  # zipfile cannot encrypt: set the 'encrypted' flag bit by hand
    raw[raw.index(b"PK\x03\x04") + 6] |= 0x1
    raw[raw.index(b"PK\x01\x02") + 8] |= 0x1
    z.write_bytes(bytes(raw))
    with zipfile.ZipFile(z) as zf:
        assert zf.infolist()[0].flag_bits & 0x1
    with pytest.raises(ArchiveRejected, match="password-protected"):
        scan_archive(z, LIMITS)


def test_zip_bomb_by_ratio_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", [("NORMAL/bomb.png", b"\0" * (8 << 20))], deflate=True)
    assert z.stat().st_size < 100_000
    with pytest.raises(ArchiveRejected, match="zip bomb"):
        scan_archive(z, LIMITS)


def test_small_compressible_file_is_not_a_bomb(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", [("labels.csv", b"file,label\n" * 5000)], deflate=True)
    assert [e.name for e in scan_archive(z, LIMITS)] == ["labels.csv"]


def test_too_many_files_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", [(f"NORMAL/{i}.png", b"x") for i in range(6)])
    assert len(scan_archive(z, ArchiveLimits(max_files=6))) == 6
    with pytest.raises(ArchiveRejected, match="more than 5 files"):
        scan_archive(z, ArchiveLimits(max_files=5))


def test_oversize_member_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", [("NORMAL/a.png", b"x" * 100), ("NORMAL/b.png", b"x" * 2000)])
    with pytest.raises(ArchiveRejected, match="'NORMAL/b.png' is 2,000 bytes; the limit per file is 1,000"):
        scan_archive(z, ArchiveLimits(max_member_bytes=1000))


def test_total_size_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", [(f"NORMAL/{i}.png", b"x" * 400) for i in range(3)])
    with pytest.raises(ArchiveRejected, match="unpacks to more than 1,000 bytes"):
        scan_archive(z, ArchiveLimits(max_total_bytes=1000))


def test_duplicate_names_refused(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        z = make_zip(tmp_path / "a.zip", [("NORMAL/a.png", b"1"), ("NORMAL/a.png", b"2")])
    with pytest.raises(ArchiveRejected, match="more than once"):
        scan_archive(z, LIMITS)


@pytest.mark.parametrize("content", [b"", b"this is not a zip", b"PK\x03\x04 truncated"])
def test_not_a_zip_refused(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "upload.zip"
    p.write_bytes(content)
    with pytest.raises(ArchiveRejected, match="not a zip file"):
        scan_archive(p, LIMITS)


def test_empty_zip_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveRejected, match="no usable files"):
        scan_archive(make_zip(tmp_path / "a.zip", []), LIMITS)


def test_zip_of_only_junk_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", [("__MACOSX/._x", b"1"), (".DS_Store", b"2"), ("NORMAL/", b"")])
    with pytest.raises(ArchiveRejected, match="no usable files"):
        scan_archive(z, LIMITS)


def test_read_entry_returns_bytes(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", [("./NORMAL/a.png", b"hello" * 100)], deflate=True)
    (entry,) = scan_archive(z, LIMITS)
    with zipfile.ZipFile(z) as zf:
        assert read_entry(zf, entry, LIMITS) == b"hello" * 100


def test_read_entry_caps_bytes_regardless_of_header(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", [("NORMAL/a.png", b"x" * 1000)])
    with zipfile.ZipFile(z) as zf:
        with pytest.raises(ArchiveRejected, match="larger than its zip header says"):
            read_entry(zf, ArchiveEntry("NORMAL/a.png", 10), LIMITS)
        with pytest.raises(ArchiveRejected):
            read_entry(zf, ArchiveEntry("NORMAL/a.png", 1000), ArchiveLimits(max_member_bytes=500))


def test_read_entry_detects_corruption(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "a.zip", [("NORMAL/a.png", b"abcdefgh" * 100)])
    raw = bytearray(z.read_bytes())
    at = raw.index(b"abcdefgh")
    raw[at + 10] ^= 0xFF  # flip a byte of the stored data: CRC mismatch
    z.write_bytes(bytes(raw))
    (entry,) = scan_archive(z, LIMITS)
    with zipfile.ZipFile(z) as zf, pytest.raises(zipfile.BadZipFile):
        read_entry(zf, entry, LIMITS)


def test_many_small_members_are_checked_by_the_archive_total_ratio(tmp_path: Path) -> None:
    # 300 members of 512 KiB zeros: each below the per-member threshold, together 150 MiB from a few hundred kB.
    members = [(f"NORMAL/{i}.dcm", b"\0" * (512 * 1024)) for i in range(300)]
    z = make_zip(tmp_path / "many.zip", members, deflate=True)
    assert z.stat().st_size < 1_000_000
    with pytest.raises(ArchiveRejected, match=r"the zip as a whole unpacks \d+:1.*zip bomb"):
        scan_archive(z, LIMITS)


def test_ordinary_compressible_dataset_passes_the_total_ratio(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    # Noisy images compress a little (as X-rays do); a few tiny compressible files do not matter.
    members = [(f"NORMAL/{i}.raw", rng.integers(0, 16, 200_000, dtype=np.uint8).tobytes()) for i in range(20)]
    members += [("labels.csv", b"file,label\n" * 50)]
    z = make_zip(tmp_path / "ok.zip", members, deflate=True)
    assert len(scan_archive(z, LIMITS)) == 21
