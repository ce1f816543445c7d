"""The remote writer against the local one: the same calls give the same records, whatever fails.

Hypothesis generates events (scalars, texts, histograms on a few tags), flush patterns, timer
ticks and injected upload failures on a memory:// store; the stored objects, read in name order,
must hold the local writer's file record for record (a call that raised did not take its
record, so it is not given to the local writer either). A writer that drops a queued record
when it retries an upload is caught by the same property. Examples: NPNN_HYPOTHESIS_EXAMPLES.
"""

import tempfile
import uuid

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hypothesis_settings import examples

import tbwriter
from tbwriter import remote
from tbwriter.events import EventFileError
from tbwriter.proto import event_pb2
from tbwriter.reader import event_files, read_records

EXAMPLES = examples(25)


class FaultyFileSystem(MemoryFileSystem):
    """memory:// whose next `failures` uploads fail, as a store that drops connections."""

    protocol = "faulty"
    failures = 0

    def pipe_file(self, path, value, **kwargs):
        if FaultyFileSystem.failures > 0:
            FaultyFileSystem.failures -= 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().pipe_file(path, value, **kwargs)


fsspec.register_implementation("faulty", FaultyFileSystem, clobber=True)

TAGS = ["loss", "acc", "notes"]
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
OPS = {
    "scalar": st.tuples(st.sampled_from(TAGS), st.floats(width=32), st.integers(0, 10**6)),
    "text": st.tuples(st.sampled_from(TAGS), st.text(max_size=40), st.integers(0, 10**6)),
    "histogram": st.tuples(st.sampled_from(TAGS), st.lists(finite, min_size=1, max_size=8), st.integers(0, 9)),
    "flush": st.just(()),
    "timer": st.just(()),  # what the flush thread does every flush_secs
    # Fewer than ATTEMPTS failures are absorbed by the retries; 1000 is a store down until the next
    # "fail" (0: the store is back).
    "fail": st.tuples(st.sampled_from([0, 1, remote.ATTEMPTS - 1, remote.ATTEMPTS, 2 * remote.ATTEMPTS, 1000])),
}
# Adds are half of the calls; flushes, timer ticks and faults the other half.
op = st.sampled_from(list(OPS)).flatmap(lambda kind: OPS[kind].map(lambda args: (kind, *args)))
ops_lists = st.lists(op, min_size=10, max_size=60)


def add(w, what, tag, value, step) -> None:
    """One add_* call with an explicit wall time, so that both writers encode the same bytes."""
    if what == "scalar":
        w.add_scalar(tag, value, step, walltime=step / 8)
    elif what == "text":
        w.add_text(tag, value, step, walltime=step / 8)
    else:
        w.add_histogram(tag, np.array(value, dtype=np.float32), step, walltime=step / 8)


def records(paths) -> list[bytes]:
    """Every record's data, file after file, the first (file_version, written at its own time) without its wall time."""
    data = [r.data for p in paths for r in read_records(p)]
    first = event_pb2.Event.FromString(data[0])
    assert first.file_version == "brain.Event:2"
    first.ClearField("wall_time")
    return [first.SerializeToString(), *data[1:]]


def check_same_records(ops, max_queue: int) -> None:
    """Apply ops to a remote and a local SummaryWriter; the stored objects hold the local file's records."""
    FaultyFileSystem.failures = 0
    url = f"faulty://bucket/{uuid.uuid4().hex}"
    remote_w = tbwriter.SummaryWriter(url)
    state = remote_w.file_writer.event_writer._state
    with tempfile.TemporaryDirectory() as local_dir:
        local_w = tbwriter.SummaryWriter(local_dir, max_queue=max_queue)
        for what, *args in ops:
            if what == "fail":
                FaultyFileSystem.failures = args[0]
            elif what == "timer":
                state.timer_flush()
            elif what == "flush":
                try:
                    remote_w.flush()
                except EventFileError:
                    pass  # the records stay queued
            else:
                try:
                    add(remote_w, what, *args)
                except EventFileError:
                    continue  # refused: the error says this record was not taken
                add(local_w, what, *args)
        FaultyFileSystem.failures = 0
        remote_w.close()
        local_w.close()
        (local_file,) = event_files(local_dir)["."]
        expected = records([local_file])
    (objects,) = event_files(url).values()
    assert objects == sorted(objects)
    got = records(objects)
    assert got == expected, f"stored {len(got)} records, the local file {len(expected)}"
    assert state.uploaded == sum(16 + len(r.data) for p in objects for r in read_records(p))


@pytest.fixture
def small_store(monkeypatch):
    """Sizes small enough for a few records to reach them: background uploads and the memory bound."""
    monkeypatch.setattr(remote, "FIRST_DELAY", 0.0)
    monkeypatch.setattr(remote, "OBJECT_BYTES", 400)  # an upload inside add_* every few records
    monkeypatch.setattr(remote, "MAX_PENDING", 3000)  # refusals while the store fails


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_lists, max_queue=st.integers(1, 12))
def test_remote_objects_hold_the_local_files_records(small_store, ops, max_queue):
    check_same_records(ops, max_queue)


def test_the_property_catches_a_writer_that_drops_a_record_when_it_retries(small_store, monkeypatch):
    write_locked = remote.ObjectState.write_locked

    def drops_one_on_retry(self, check_deleted=False):
        if self.sealed and self.buf:  # an earlier upload failed and new records wait: lose the last
            self.buf.pop()
        return write_locked(self, check_deleted)

    monkeypatch.setattr(remote.ObjectState, "write_locked", drops_one_on_retry)
    search = settings(
        max_examples=max(EXAMPLES, 200),
        deadline=None,
        derandomize=True,
        phases=[Phase.generate],  # found is enough: no shrinking
        suppress_health_check=[HealthCheck.function_scoped_fixture],
        database=None,
    )(given(ops=ops_lists, max_queue=st.just(10))(check_same_records))
    with pytest.raises(AssertionError, match="stored .* records, the local file"):
        search()
