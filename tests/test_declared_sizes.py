"""Small hostile files that declare huge sizes: refused with a clear error, memory bounded by what they hold.

Each test builds its input (a 70-byte event, sparse files via truncate, a gzip bomb, a zip bomb
member, damaged checkpoints) and measures the peak of Python and NumPy allocations with
tracemalloc, which both report to.
"""

import csv
import gzip
import io
import json
import os
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from test_reader import frame

import npnn
from npnn import mnist as program
from npnn import nn, optim
from npnn.datasets import mnist as data
from npnn.datasets.mnist import DataError
from tbwriter.__main__ import main as tbwriter_main
from tbwriter.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tbwriter.reader import CorruptRecordError, read_records, tensor_to_array
from tbwriter.wire import masked_crc32c

MiB = 1 << 20


def peak_bytes(call):
    """(result or exception, peak bytes allocated while call() ran)."""
    tracemalloc.start()
    try:
        result = call()
    except Exception as e:  # the caller checks which
        result = e
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return result, peak


# --- reader and export ------------------------------------------------------------------------


def tensor(shape, values=(1.0,)) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=list(values))
    for d in shape:
        t.tensor_shape.dim.add(size=d)
    return t


def test_export_of_a_70_byte_event_claiming_2_31_elements(tmp_path):
    value = summary_pb2.Summary.Value(tag="loss", tensor=tensor([2**31]))
    value.metadata.plugin_data.plugin_name = "scalars"
    good = summary_pb2.Summary.Value(tag="ok", simple_value=2.5)
    event = event_pb2.Event(step=3, summary=summary_pb2.Summary(value=[value, good]))
    path = tmp_path / "events.out.tfevents.1.hostile"
    path.write_bytes(frame(event.SerializeToString()))
    assert path.stat().st_size < 100
    out, err = io.StringIO(), io.StringIO()
    code, peak = peak_bytes(
        lambda: tbwriter_main(["export", str(path), "--csv", str(tmp_path / "o.csv")], stdout=out, stderr=err)
    )
    assert code == 1
    assert "'loss': expected a one-element numeric tensor, got shape [2147483648]" in err.getvalue()
    rows = list(csv.reader(open(tmp_path / "o.csv")))
    assert [(r[1], r[2], r[4]) for r in rows[1:]] == [("ok", "3", "2.5")]  # the good value beside it
    assert peak < 2 * MiB, peak


@pytest.mark.parametrize(
    "shape, says",
    [
        ([2**40], "would take more than"),
        ([2**31, 2**31, 2**31], "would take more than"),  # overflows int64: checked in Python ints
        ([-1, 3], "negative dimension"),
    ],
)
def test_tensor_shapes_are_checked_against_the_values_present(shape, says):
    error, peak = peak_bytes(lambda: tensor_to_array(tensor(shape)))
    assert isinstance(error, ValueError) and says in str(error), error
    assert peak < MiB
    assert tensor_to_array(tensor([4], [1.0, 2.0])).tolist() == [1.0, 2.0, 2.0, 2.0]  # TF's fill rule


def _header(length: int) -> bytes:
    """A record header whose length checksum holds (the length is believable)."""
    head = struct.pack("<Q", length)
    return head + struct.pack("<I", masked_crc32c(head))


def test_sparse_file_claiming_a_64_mib_record_fails_its_crc_in_bounded_memory(tmp_path):
    length = 64 * MiB  # reading holes ran at ~90 MB/s here: gigabytes would cost the test budget
    path = tmp_path / "events.out.tfevents.sparse"
    path.write_bytes(_header(length))
    os.truncate(path, 12 + length + 4)  # a hole: zeros on read, nothing on disk
    error, peak = peak_bytes(lambda: list(read_records(path)))
    assert isinstance(error, CorruptRecordError) and "data checksum mismatch" in str(error), error
    assert str(path) in str(error)
    assert peak < 4 * MiB, peak


def test_a_large_valid_record_is_held_once(tmp_path):
    body = np.random.default_rng(0).integers(0, 256, 8 * MiB, dtype=np.uint8).tobytes()
    path = tmp_path / "events.out.tfevents.large"
    path.write_bytes(frame(b"small") + frame(body) + frame(b"after"))
    records, peak = peak_bytes(lambda: [r.data for r in read_records(path)])
    assert records == [b"small", body, b"after"]
    assert peak < len(body) + 3 * MiB, peak  # the record, plus a chunk or two of reading


def test_a_record_longer_than_the_file_is_a_truncation(tmp_path):
    path = tmp_path / "events.out.tfevents.cut"
    path.write_bytes(frame(b"ok") + _header(3 << 30) + b"x" * 100)
    seen = []
    records, peak = peak_bytes(lambda: [r.data for r in read_records(path, on_truncated=seen.append)])
    assert records == [b"ok"] and "needs 3221225488 bytes" in seen[0].reason
    assert peak < 2 * MiB  # one chunk of reading


# --- MNIST files ------------------------------------------------------------------------------

LABELS = data.TEST_LABELS


def labels_header(n: int) -> bytes:
    return bytes([0, 0, 8, 1]) + struct.pack(">I", n)


def test_gzip_bomb_behind_a_valid_header_stops_at_the_declared_size(tmp_path):
    path = tmp_path / f"{LABELS}.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(labels_header(5) + bytes(5))
        zeros = bytes(MiB)
        for _ in range(64):  # 64 MiB of zeros in ~64 kB
            f.write(zeros)
    assert path.stat().st_size < MiB
    error, peak = peak_bytes(lambda: data.read_file(path, LABELS, {LABELS: "0" * 64}))
    assert isinstance(error, DataError), error
    assert str(error).startswith(f"{path}: trailing bytes: more than 5 data bytes, expected 5")
    assert peak < 4 * MiB, peak


def test_gzip_header_declaring_more_than_the_file_can_hold(tmp_path):
    path = tmp_path / f"{LABELS}.gz"
    path.write_bytes(gzip.compress(labels_header(4_000_000_000) + bytes(100)))
    error, peak = peak_bytes(lambda: data.read_file(path, LABELS, {LABELS: "0" * 64}))
    assert isinstance(error, DataError), error
    assert "declares shape (4000000000,)" in str(error) and "more than a" in str(error)
    assert peak < MiB


@pytest.mark.parametrize(
    "header, says",
    [
        (b"", "wrong magic number 0x00000000"),
        (labels_header(5), "trailing bytes: 3221225464 data bytes, expected 5"),
    ],
)
def test_symlink_to_a_3_gib_sparse_file_is_not_read_whole(tmp_path, header, says):
    target = tmp_path / "huge"
    target.write_bytes(header)
    os.truncate(target, 3 << 30)
    (tmp_path / "mnist").mkdir()
    link = tmp_path / "mnist" / LABELS
    link.symlink_to(target)
    error, peak = peak_bytes(lambda: data.read_file(link, LABELS, {LABELS: "0" * 64}))
    assert isinstance(error, DataError) and str(error).startswith(f"{link}: {says}"), error
    assert peak < MiB


# --- Module.load and --resume ------------------------------------------------------------------


def small_model() -> nn.Module:
    npnn.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def write_npz_member_stream(z: zipfile.ZipFile, name: str, dtype: str, shape: tuple, chunks):
    """Add name.npy to z with a header for (dtype, shape), then the given data chunks, deflated."""
    with z.open(name + ".npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        for chunk in chunks:
            f.write(chunk)


def test_load_refuses_an_extra_zip_bomb_member_before_reading_it(tmp_path):
    model = small_model()
    path = tmp_path / "m.npz"
    model.save(path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        write_npz_member_stream(z, "bomb", "<f4", (16 * MiB,), (bytes(MiB) for _ in range(64)))
    assert path.stat().st_size < MiB
    before = {k: v.copy() for k, v in model.state_dict().items()}
    error, peak = peak_bytes(lambda: small_model().load(path))
    assert isinstance(error, ValueError) and str(error) == f"{path}: unexpected key 'bomb' for Sequential", error
    assert peak < MiB, peak
    assert all((model.state_dict()[k] == v).all() for k, v in before.items())


@pytest.mark.parametrize(
    "damage, says",
    [
        ("string dtype", "'1.bias' has dtype <U3, expected numbers"),
        ("short data", "'1.bias' declares shape (2,) of float32 (8 bytes) but holds 4 bytes"),
        ("huge shape", "'1.bias' has shape (4294967296,), the model's parameter has shape (2,)"),
    ],
)
def test_load_checks_everything_then_assigns(tmp_path, damage, says):
    source = small_model()
    state = source.state_dict()
    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w") as z:
        for name, array in state.items():
            if name != "1.bias":
                with z.open(name + ".npy", "w") as f:
                    np.lib.format.write_array(f, array)
        if damage == "string dtype":
            with z.open("1.bias.npy", "w") as f:
                np.lib.format.write_array(f, np.array(["abc", "def"]))
        elif damage == "short data":
            write_npz_member_stream(z, "1.bias", "<f4", (2,), [b"\0" * 4])
        else:
            write_npz_member_stream(z, "1.bias", "<f4", (1 << 32,), [b"\0" * 8])
    target = small_model()
    for p in target.parameters():
        p.data[...] = 7.0
    with pytest.raises(ValueError) as info:
        target.load(path)
    assert str(info.value) == f"{path}: {says}"
    assert all((p.data == 7.0).all() for p in target.parameters())  # nothing was assigned


@pytest.fixture()
def checkpoint(tmp_path):
    """A valid --resume file of the MLP with Adam, written by save_checkpoint."""
    npnn.manual_seed(0)
    model = program.MLP()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    path = tmp_path / "ckpt.npz"
    program.save_checkpoint(str(path), model, opt, {"model": "mlp", "epoch": 1, "step": 10})
    return path


def rewrite_meta(path, change):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    change(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def truncate_half(path):
    os.truncate(path, path.stat().st_size // 2)


def empty(path):
    os.truncate(path, 0)


def fifo(path):
    os.unlink(path)
    os.mkfifo(path)


def flip_a_data_byte(path):
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.infolist()[1]
    raw[info.header_offset + 30 + len(info.filename) + 1000] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage, says",
    [
        (truncate_half, "File is not a zip file"),
        (empty, "File is not a zip file"),
        (fifo, "not a regular file"),
        (flip_a_data_byte, "Bad CRC-32"),
        (lambda p: rewrite_meta(p, lambda m: m.update(epoch="one")), "meta: 'epoch' is 'one', expected int"),
        (lambda p: rewrite_meta(p, lambda m: m.pop("rng")), "meta: missing key 'rng'"),
        (
            lambda p: rewrite_meta(p, lambda m: m["optim_groups"][0].update(lr=-0.5)),
            "lr: expected a value >= 0.0, got -0.5",
        ),
        (lambda p: rewrite_meta(p, lambda m: m.update(rng={"state": 1})), "--resume"),
        (lambda p: rewrite_meta(p, lambda m: m.update(optim_scalars={"x": 1})), "optim_scalars key 'x'"),
    ],
)
def test_bad_resume_files_exit_1_with_one_message(checkpoint, tmp_path, capsys, damage, says):
    damage(checkpoint)
    code = program.main(
        [
            "--resume",
            str(checkpoint),
            "--data",
            str(tmp_path),  # exists, holds no data
            "--logdir",
            str(tmp_path / "logs"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: --resume {checkpoint}: ") and says in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "logs").exists()  # refused before any work


def test_read_scalars_reads_a_large_zero_filled_record_in_bounded_memory(tmp_path):
    from tbwriter.scalars import read_scalars

    scalar = event_pb2.Event(
        step=1, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="a", simple_value=1.5)])
    )
    image = event_pb2.Event(
        step=1,
        summary=summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(
                    tag="img", image=summary_pb2.Summary.Image(encoded_image_string=bytes(8 * MiB))
                )
            ]
        ),
    )
    path = tmp_path / "events.out.tfevents.zeros"
    path.write_bytes(
        frame(scalar.SerializeToString()) + frame(image.SerializeToString()) + frame(scalar.SerializeToString())
    )
    scalars, peak = peak_bytes(lambda: read_scalars(path))
    assert scalars["."]["a"].values.tolist() == [1.5, 1.5]
    assert peak < 8 * MiB + 16 * MiB, peak  # the record once plus the 4 MiB chunks' working set (was 348 MiB)


def test_export_of_a_sparse_file_claiming_a_64_mib_record(tmp_path):
    length = 64 * MiB
    scalar = event_pb2.Event(
        step=1, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="a", simple_value=1.5)])
    )
    path = tmp_path / "events.out.tfevents.sparse"
    path.write_bytes(frame(scalar.SerializeToString()) + _header(length))
    os.truncate(path, path.stat().st_size + length + 4)
    out, err = io.StringIO(), io.StringIO()
    code, peak = peak_bytes(
        lambda: tbwriter_main(["export", str(path), "--csv", str(tmp_path / "o.csv")], stdout=out, stderr=err)
    )
    assert code == 1 and f"{path}: corrupt record at byte offset 30: data checksum mismatch" in err.getvalue()
    assert peak < 24 * MiB, peak  # was 2.7 GiB
