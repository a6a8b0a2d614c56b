"""README promises checked where they live: keys exist only as SHA-256 hashes in the database (file bytes and
rows, SQLite and PostgreSQL) and a revoked key is refused; the real 40 MP pixel limit refuses a tiny PNG
whose header declares more, without the decoder allocating the pixels."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import REPO, Stack
from tests.service.test_limits_uvicorn import OVER_THE_LIMIT, declared_png


def plain_in_database(stack: Stack, secrets: list[str]) -> list[str]:
    """The secrets found in any row of any table, or in the database's bytes on disk."""
    found = []
    engine = sa.create_engine(stack.database_url)
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        dump = "\n".join(repr(tuple(row)) for table in meta.sorted_tables for row in conn.execute(table.select()))
    engine.dispose()
    found += [s for s in secrets if s in dump]
    if stack.database_url.startswith("sqlite:///"):
        db = Path(stack.database_url.removeprefix("sqlite:///"))
        blobs = [p.read_bytes() for p in db.parent.glob(db.name + "*")]  # the file, its -wal and -shm
        found += [s for s in secrets if any(s.encode() in b for b in blobs)]
    else:
        name = stack.database_url.rsplit("/", 1)[1]
        pg = subprocess.run(["pg_dump", "-h", "127.0.0.1", "-U", "root", name], capture_output=True, check=True)
        found += [s for s in secrets if s.encode() in pg.stdout]
    return found


@pytest.mark.e2e
def test_keys_are_stored_only_as_hashes_and_a_revoked_key_is_refused(stack: Stack) -> None:
    with stack.client() as admin:
        made = [admin.post("/v1/keys", json={"name": f"hash-{r}", "role": r}).json() for r in ("staff", "clinician")]
        rotated = admin.post(f"/v1/keys/{made[0]['id']}/rotate", json={"grace_seconds": 600})
        assert rotated.status_code == 201, rotated.text
        made.append(rotated.json()["key"])
        keys = [k["key"] for k in made]
        for key in keys:  # each one used once: last_used_at and the guard's lookups are written too
            assert httpx.get(stack.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).is_success
        secrets = [*keys, *(k[8:] for k in keys), stack.admin_key]  # whole keys, and their secret parts
        assert plain_in_database(stack, secrets) == []
        engine = sa.create_engine(stack.database_url)
        with engine.connect() as conn:
            stored = {r.id: r.key_hash for r in conn.execute(sa.text("SELECT id, key_hash FROM api_keys"))}
        engine.dispose()
        for k in made:
            assert stored[k["id"]] == hashlib.sha256(k["key"].encode()).hexdigest()
        for log in stack.logs.iterdir():
            text = log.read_text(errors="replace")
            assert not [k for k in keys if k in text], log

        assert admin.delete(f"/v1/keys/{made[1]['id']}").status_code == 200
    revoked = {"Authorization": f"Bearer {made[1]['key']}"}
    r = httpx.get(stack.base_url + "/v1/models", headers=revoked)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    r = httpx.post(stack.base_url + "/v1/models/any/predict", headers=revoked, files={"file": ("x.png", b"x" * 1000)})
    assert r.status_code == 401  # refused by the guard, before the body


# In a fresh process, whose peak resident set (VmHWM: unlike getrusage's ru_maxrss, not inherited from the
# parent across fork and exec) shows any allocation the decoder touched, even if freed since.
DECODE = """
import json, sys
from pathlib import Path
from pipelines.imaging import ImageRejected, decode_image

def peak_kib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])

decode_image(Path(sys.argv[2]).read_bytes())  # imports and decoder set-up happen before the measurement
before = peak_kib()
try:
    decode_image(Path(sys.argv[1]).read_bytes())
    message = None
except ImageRejected as exc:
    message = str(exc)
print(json.dumps({"message": message, "grown_kib": peak_kib() - before}))
"""


def test_real_pixel_limit_is_checked_from_the_header_without_allocating(tmp_path: Path) -> None:
    from tests.service.test_micro_batching import film

    small = tmp_path / "small.png"
    small.write_bytes(film(0))
    for width, height, rows in OVER_THE_LIMIT:
        big = tmp_path / f"{width}.png"
        big.write_bytes(declared_png(width, height, rows))
        assert big.stat().st_size < 100_000
        run = subprocess.run(
            [sys.executable, "-c", DECODE, str(big), str(small)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result["message"] is not None, "the header's size was not refused"
        message = result["message"]
        assert "limit of 40.0 megapixels" in message, message
        assert f"{width}x{height} pixels" in message or f"{width * height:,} pixels" in message, message
        assert result["grown_kib"] < 16 * 1024, f"peak memory grew {result['grown_kib']} KiB refusing a header"
