"""Fuzz the reader and `inspect` with 1,000 damaged copies of a real event file (seeded).

Damage: truncation at a random byte, 1-8 flipped bytes, a random run of bytes overwritten,
bytes inserted or deleted, flips plus truncation. For every copy:
- the reader raises nothing but CorruptRecordError (truncation is reported, not raised);
- every record it yields (it passed both CRCs) is byte-for-byte an original record, at its
  original offset when no bytes were inserted or deleted, and parses to the original event;
- `inspect` (main() in process) returns 0 or 1, never raises, and returns 1 exactly when
  the reader found corruption.
"""

import io
import random

import pytest

from tbwriter import reader
from tbwriter.__main__ import main
from test_reader import rich_events, write_tb_file

CASES = 1000
SEED = 20261128


def damage(data: bytes, rng: random.Random) -> tuple[bytes, str, bool]:
    """Return (damaged copy, kind of damage, whether offsets are preserved)."""
    kind = rng.choice(["truncate", "flip", "flips", "overwrite", "insert", "delete", "flip+truncate"])
    out = bytearray(data)
    n = len(out)
    if kind == "truncate":
        return bytes(out[: rng.randrange(n)]), kind, True
    if kind in ("flip", "flip+truncate"):
        out[rng.randrange(n)] ^= 1 << rng.randrange(8)
        if kind == "flip+truncate":
            out = out[: rng.randrange(n)]
        return bytes(out), kind, True
    if kind == "flips":
        for _ in range(rng.randint(2, 8)):
            out[rng.randrange(n)] ^= rng.randrange(1, 256)
        return bytes(out), kind, True
    if kind == "overwrite":
        start = rng.randrange(n)
        length = rng.randint(1, 64)
        out[start : start + length] = bytes(rng.randrange(256) for _ in range(min(length, n - start)))
        return bytes(out), kind, True
    at = rng.randrange(n)
    if kind == "insert":
        return bytes(out[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + out[at:]), kind, False
    return bytes(out[:at] + out[at + rng.randint(1, 16) :]), kind, False


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A real event file with scalars, histograms, images, text, audio, pr curves, hparams and a graph."""
    path = write_tb_file(tmp_path_factory.mktemp("orig"), rich_events(3))
    records = list(reader.read_records(path))
    return open(path, "rb").read(), {r.offset: r.data for r in records}, [r.event() for r in records]


def test_fuzz_reader_and_inspect(original, tmp_path):
    data, by_offset, events = original
    originals = set(by_offset.values())
    rng = random.Random(SEED)
    counts = {"clean": 0, "truncated": 0, "corrupt": 0}
    kinds: dict[str, int] = {}
    records_checked = 0
    path = tmp_path / "events.out.tfevents.fuzz"
    for case in range(CASES):
        damaged, kind, offsets_kept = damage(data, rng)
        kinds[kind] = kinds.get(kind, 0) + 1
        path.write_bytes(damaged)
        truncations = []
        corrupt = None
        yielded = []
        try:
            for record in reader.read_records(path, on_truncated=truncations.append):
                yielded.append(record)
        except reader.CorruptRecordError as e:
            corrupt = e
            assert e.path == str(path) and 0 <= e.offset < len(damaged), (case, kind)
        for record in yielded:
            if offsets_kept:
                assert by_offset.get(record.offset) == record.data, (case, kind, record.offset)
            else:
                assert record.data in originals, (case, kind, record.offset)
        records_checked += len(yielded)
        # Events: the same prefix of the original events, parsed equal.
        got_events = []
        try:
            got_events.extend(reader.read_events(path, on_truncated="ignore"))
        except reader.CorruptRecordError:
            pass
        assert len(got_events) == len(yielded), (case, kind)
        if offsets_kept:
            assert got_events == events[: len(got_events)], (case, kind)
        counts["corrupt" if corrupt else "truncated" if truncations else "clean"] += 1
        assert len(truncations) <= 1 and not (corrupt and truncations)
        # inspect never crashes: 0 unless the reader found corruption, then 1.
        out, err = io.StringIO(), io.StringIO()
        code = main(["inspect", str(path)], stdout=out, stderr=err)
        assert code == (1 if corrupt else 0), (case, kind, err.getvalue())
        assert out.getvalue().startswith(f"run .  (1 file, {len(yielded)} events)"), (case, kind)
        if corrupt:
            assert f"byte offset {corrupt.offset}" in err.getvalue()
    print(
        f"\nfuzz: {CASES} damaged copies of a {len(data)}-byte, {len(events)}-record file "
        f"(seed {SEED}); outcomes {counts}; damage {dict(sorted(kinds.items()))}; "
        f"{records_checked} yielded records checked equal to the original"
    )
    assert sum(counts.values()) == CASES
    assert all(counts.values())  # each outcome was exercised
