"""SummaryWriter (tensorboardX-compatible) and FileWriter (TensorFlow 1 style).

Both write one event file per run directory through events.EventFileWriter (for a URL
log_dir, s3://... or any fsspec URL, one object per upload: see remote.py). Summaries
come from tbwriter.summary; Event bytes and record framing from tbwriter.wire (the scalar
hot path from a per-tag prefix, without protobuf objects).
"""

import contextlib
import functools
import math
import operator
import os
import socket
import threading
import time
import weakref
from datetime import datetime

import numpy as np

from tbwriter import image as _image
from tbwriter import summary as _summary
from tbwriter import wire
from tbwriter.wire import scalar_record as _scalar_record
from tbwriter._convert import as_array
from tbwriter.encoder import Encoder
from tbwriter.events import EventFileWriter, WriterStateError
from tbwriter.proto import event_pb2, summary_pb2

__all__ = ["SummaryWriter", "FileWriter", "WriterStateError"]

# Histograms of at most this many values are built on the caller's thread: below it the
# hand-off to the worker (copy, queue, thread switch) costs about what the histogram does.
ASYNC_MIN_VALUES = 4096


def _as_step(global_step) -> int:
    """global_step as an int (None -> 0); numpy/torch integer scalars are accepted."""
    if global_step is None:
        return 0
    try:
        return operator.index(global_step)
    except TypeError:
        pass
    try:
        f = float(global_step)
    except (TypeError, ValueError):
        f = math.nan
    if isinstance(global_step, (str, bytes)) or not f.is_integer():
        raise TypeError(f"global_step: expected an integer, got {global_step!r}")
    return int(f)


def _as_walltime(walltime) -> float:
    """walltime as float seconds (None -> now)."""
    if walltime is None:
        return time.time()
    if isinstance(walltime, (str, bytes)):
        raise TypeError(f"walltime: expected seconds as a number, got {walltime!r}")
    return float(walltime)


def _as_float(value, arg_name: str = "scalar_value") -> float:
    """A Python float from any scalar-like (numpy, torch, jax scalar or one-element array)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{arg_name}: expected a number, got {type(value).__name__} {value!r}")
    if getattr(value, "ndim", 0):
        shape = tuple(getattr(value, "shape", ()))
        if math.prod(shape) != 1:
            raise ValueError(f"{arg_name}: expected a single number, got an array of shape {shape}")
        value = value.reshape(())  # float() of a 1-element array is deprecated in numpy
    try:
        return float(value)
    except OverflowError:
        raise OverflowError(
            f"{arg_name}: an int of {int(value).bit_length()} bits is beyond the float range "
            f"(about 1.8e308); pass float('inf') for an infinite value"
        ) from None
    except (TypeError, ValueError) as e:
        raise TypeError(f"{arg_name}: expected a number, got {type(value).__name__}: {e}") from None


def _expand_user(logdir) -> str:
    """A local logdir with ~ expanded (as the shell and --data do); URLs unchanged."""
    logdir = os.fspath(logdir)
    return logdir if "://" in logdir else os.path.expanduser(logdir)


def _graph_bytes(graph) -> bytes:
    """Serialized GraphDef from a GraphDef, its bytes, or an object with as_graph_def()."""
    if isinstance(graph, (bytes, bytearray)):
        return bytes(graph)
    if hasattr(graph, "as_graph_def"):
        graph = graph.as_graph_def()
    if hasattr(graph, "SerializeToString"):  # a GraphDef, of this or another protobuf module
        return graph.SerializeToString()
    raise TypeError(f"graph: expected a GraphDef or an object with as_graph_def(), got {type(graph).__name__}")


def _summary_event(seen: set, summary, step: int, walltime, owned: bool) -> tuple:
    """(Event bytes of summary at step without the metadata of tags in seen, the tags whose metadata it carries)."""
    data = summary.SerializeToString()
    first = set()
    changed = False
    for i, v in enumerate(summary.value):
        if v.HasField("metadata"):
            if v.tag not in seen and v.tag not in first:
                first.add(v.tag)
                continue
            if not owned:  # never modify the caller's message
                summary = summary_pb2.Summary.FromString(data)
                owned = True
            summary.value[i].ClearField("metadata")
            changed = True
    if changed:
        data = summary.SerializeToString()
    wall_time = time.time() if walltime is None else _as_walltime(walltime)
    return wire.event(wall_time, step, wire.EVENT_SUMMARY, data), first


def _encode_event(seen: set, build, step: int, walltime: float) -> bytes:
    """The worker's job: build() the Summary and make it Event bytes, as FileWriter._write_summary does."""
    event, first = _summary_event(seen, build(), step, walltime, True)
    seen |= first  # the record's place in the file was taken when it was submitted
    return event


def _snapshot(value, arr: np.ndarray, fresh: bool = False) -> np.ndarray:
    """arr as the worker may keep it: a copy, unless nobody else can change it (built here from Python values)."""
    return arr if fresh or isinstance(value, (list, tuple)) else np.array(arr, copy=True)


def _boxed_image(tag: str, img_tensor, box_tensor, labels, rescale, dataformats: str):
    """The image with its boxes drawn in (Pillow), as a Summary."""
    from tbwriter import boxes

    hwc = _image.to_uint8(_image.to_hwc(as_array(img_tensor, "img_tensor"), dataformats))
    return _summary.image(tag, boxes.draw_boxes(hwc, box_tensor, labels, rescale), dataformats="HWC")


def _check_hparams_args(metric_dict, hparam_domain_discrete) -> None:
    """add_hparams' container arguments: the types TensorBoard's hparams plugin needs."""
    if not isinstance(metric_dict, dict):
        raise TypeError(f"metric_dict: expected a dict {{tag: value}}, got {type(metric_dict).__name__}")
    if hparam_domain_discrete is not None and not isinstance(hparam_domain_discrete, dict):
        raise TypeError(
            f"hparam_domain_discrete: expected a dict {{name: [values]}}, got {type(hparam_domain_discrete).__name__}"
        )


class FileWriter:
    """TF1's tf.summary.FileWriter: one event file in logdir, fed with Summary messages."""

    def __init__(
        self,
        logdir,
        graph=None,
        max_queue: int = 10,
        flush_secs: float = 120,
        filename_suffix: str = "",
        graph_def=None,
        storage_options=None,
    ):
        if logdir is None or (isinstance(logdir, str) and not logdir):
            raise ValueError(f"logdir: expected a directory path, got {logdir!r}")
        self._logdir = _expand_user(logdir)
        self._start_time = time.time()  # the HPARAMS session's start
        self.event_writer = EventFileWriter(self._logdir, max_queue, flush_secs, filename_suffix or "", storage_options)
        self._meta_tags = set()  # tags whose metadata went out already in this file
        self._scalar_prefixes = {}
        self._write_framed = self.event_writer.write_framed
        if graph is not None or graph_def is not None:
            self.add_graph(graph if graph is not None else graph_def)

    def get_logdir(self) -> str:
        """The directory this writer writes into."""
        return self._logdir

    def _check_open(self) -> None:
        """Raise why this writer cannot write (closed, failed, inherited through fork), if so."""
        self.event_writer.check_open()

    # -- the hot path: one scalar, encoded without protobuf objects --------------------
    def _add_scalar(self, tag: str, value: float, step: int, walltime) -> None:
        prefix = self._scalar_prefixes.get(tag) or self._scalar_prefix(tag)
        self._write_framed(_scalar_record(time.time() if walltime is None else walltime, step, prefix, value))

    def _scalar_prefix(self, tag: str) -> bytes:
        """The Event bytes of tag's scalars up to the value (wire.scalar_event_prefix), checked and cached."""
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"tag: expected a non-empty str, got {tag!r}")
        _summary.utf8(tag, "tag")  # a lone surrogate: an error naming the argument
        prefix = self._scalar_prefixes[tag] = wire.scalar_event_prefix(tag)
        return prefix

    def add_scalar_value(self, tag: str, scalar_value, global_step=None, walltime=None) -> None:
        """Write one scalar as Summary.Value.simple_value (float32)."""
        t = type(scalar_value)
        v = scalar_value if t is float else _as_float(scalar_value)
        step = global_step if type(global_step) is int else _as_step(global_step)
        self._add_scalar(tag, v, step, None if walltime is None else _as_walltime(walltime))

    # -- TF1 API ------------------------------------------------------------------------
    def add_summary(self, summary, global_step=None, walltime=None) -> None:
        """Write a Summary message (or its serialized bytes) at global_step."""
        if isinstance(summary, (bytes, bytearray)):
            try:
                summary, owned = summary_pb2.Summary.FromString(bytes(summary)), True
            except Exception as e:  # protobuf's DecodeError
                raise ValueError(f"summary: the bytes are not a serialized Summary ({e})") from None
        elif isinstance(summary, summary_pb2.Summary):
            owned = False
        elif hasattr(summary, "SerializeToString"):  # a Summary of another protobuf module
            parsed = summary_pb2.Summary()
            parsed.ParseFromString(summary.SerializeToString())
            summary, owned = parsed, True
        else:
            raise TypeError(f"summary: expected a Summary or its serialized bytes, got {type(summary).__name__}")
        self._write_summary(summary, _as_step(global_step), walltime, owned)

    def _write_summary(self, summary, step: int, walltime, owned: bool) -> None:
        """Strip metadata already sent for a tag in this file, then queue the Event."""
        self._check_open()
        event, first = _summary_event(self._meta_tags, summary, step, walltime, owned)
        self.event_writer.write_serialized(event)
        self._meta_tags |= first  # only once the record was taken: a refused one's metadata goes with the next

    def add_hparams(
        self, hparam_dict: dict, metric_dict: dict, hparam_domain_discrete=None, global_step=None, start_time_secs=None
    ) -> None:
        """Hyperparameters and metrics of this run for the HPARAMS tab, the metrics as scalars.

        The session's group name is left empty, so TensorBoard names the row after the run's
        path under its --logdir: one row per run directory, the same when the run is resumed,
        never the path as typed (two runs typed alike would share a row; a URL's login would be
        stored). It starts at start_time_secs (default: when the writer was created). No
        experiment summary is written unless hparam_domain_discrete is given: TensorBoard then
        builds the table's columns from every run's hparams, so runs with different hparam keys
        all show.
        """
        _check_hparams_args(metric_dict, hparam_domain_discrete)
        metrics = {k: _as_float(v, f"metric_dict[{k!r}]") for k, v in metric_dict.items()}
        exp, ssi, sei = _summary.hparams(hparam_dict, metric_dict, start_time_secs=start_time_secs or self._start_time)
        step = _as_step(global_step)
        if hparam_domain_discrete:
            self._write_summary(_with_discrete_domains(exp, hparam_domain_discrete), step, None, True)
        self._write_summary(ssi, step, None, True)
        for k, v in metrics.items():
            self._add_scalar(k, v, step, None)
        self._write_summary(sei, step, None, True)

    def add_graph(self, graph, global_step=None, walltime=None) -> None:
        """Write a GraphDef (or an object with as_graph_def()) for the graph dashboard."""
        self.event_writer.write_serialized(
            wire.event(_as_walltime(walltime), _as_step(global_step), wire.EVENT_GRAPH_DEF, _graph_bytes(graph))
        )

    def add_event(self, event) -> None:
        """Write an Event message (of this or another protobuf module) as it is."""
        if not hasattr(event, "SerializeToString"):
            raise TypeError(f"event: expected an Event, got {type(event).__name__}")
        self.event_writer.write_serialized(event.SerializeToString())

    def add_session_log(self, session_log, global_step=None, walltime=None) -> None:
        """Write a SessionLog event (START makes TensorBoard's Python loader purge later steps)."""
        self.event_writer.write_event(
            event_pb2.Event(wall_time=_as_walltime(walltime), step=_as_step(global_step), session_log=session_log)
        )

    def flush(self) -> None:
        """Hand everything written so far to the OS before returning."""
        self.event_writer.flush()

    def close(self) -> None:
        """Flush and close; any later add_* or flush raises WriterStateError."""
        self.event_writer.close()

    def reopen(self) -> None:
        """Not supported: a closed writer stays closed; create a new writer instead."""
        raise WriterStateError("tbwriter writers never reopen; create a new writer")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _NullFileWriter:
    """The file writer of SummaryWriter(write_to_disk=False): accepts everything, writes nothing."""

    def __init__(self, logdir: str):
        self._logdir = logdir

    def get_logdir(self) -> str:
        """The directory a writing writer would write into."""
        return self._logdir

    def _ignore(self, *args, **kwargs) -> None:
        """Drop the call."""

    def _scalar_prefix(self, tag: str) -> bytes:
        """No prefix is kept: SummaryWriter.add_scalar's record goes to _write_framed, which drops it."""
        return b""

    _scalar_prefixes = {}  # never filled, so add_scalar asks _scalar_prefix
    _add_scalar = _write_summary = add_summary = add_graph = add_event = add_session_log = _ignore
    add_scalar_value = add_hparams = flush = close = _check_open = _write_framed = _ignore


class SummaryWriter:
    """tensorboardX's and torch.utils.tensorboard's SummaryWriter: every add_* of both, into log_dir."""

    def __init__(
        self,
        log_dir=None,
        comment: str = "",
        purge_step=None,
        max_queue: int = 10,
        flush_secs: float = 120,
        filename_suffix: str = "",
        write_to_disk: bool = True,
        logdir=None,
        comet_config={"disabled": True},  # noqa: B006 (tensorboardX's default, never mutated)
        storage_options=None,
        keep_scalars_for_json: bool = False,
        async_encode: bool = True,
        async_max_bytes: int = 256 * 2**20,
    ):
        if log_dir is None:
            log_dir = logdir
        if log_dir is None:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", stamp + "_" + socket.gethostname() + comment)
        if comet_config not in (None, {"disabled": True}):
            raise ValueError(
                f"comet_config: tbwriter does not log to Comet; expected None or "
                f"{{'disabled': True}}, got {comet_config!r}"
            )
        self._logdir = _expand_user(log_dir)
        self._max_queue = max_queue
        self._flush_secs = flush_secs
        self._filename_suffix = filename_suffix
        self._storage_options = storage_options  # fsspec's, for URL log_dirs (s3://...); passed on only
        self._write_to_disk = bool(write_to_disk)
        self._lock = threading.Lock()  # two threads must not both create one (sub-)run's writer
        self._start_time = time.time()
        self._defaults = None  # (global_step, walltime) inside use_metadata()
        # add_scalars values since the last export_scalars_to_json, kept only when asked for:
        # tensorboardX keeps them all for the writer's life (28 MB after 100,000 two-key calls), torch none.
        self._scalars_for_json = {} if keep_scalars_for_json else None
        self.file_writer = None
        self.all_writers = None
        self._closing = []  # file writers taken out of all_writers by close() and not closed yet
        # Heavy values are encoded by a worker thread (tbwriter/encoder.py); its errors land in
        # _async_errors, which every call checks after doing its own work.
        self._encoder = Encoder(async_max_bytes) if async_encode and self._write_to_disk else None
        self._async_errors = [] if self._encoder is None else self._encoder.errors
        if self._encoder is not None:  # a writer dropped without close(): its jobs still finish
            weakref.finalize(self, self._encoder.close)
        fw = self._get_file_writer()
        if purge_step is not None:
            # TensorBoard's Python loaders drop earlier-read steps >= purge_step on a
            # SessionLog START; the server's loader takes a run's first START as the initial
            # one and purges only on later ones, so a restart writes two.
            step = _as_step(purge_step)
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            fw.add_session_log(start, step)
            fw.add_session_log(start, step)

    def get_logdir(self) -> str:
        """The run directory."""
        return self._logdir

    def _new_file_writer(self, logdir: str):
        if not self._write_to_disk:
            return _NullFileWriter(logdir)
        return FileWriter(
            logdir,
            max_queue=self._max_queue,
            flush_secs=self._flush_secs,
            filename_suffix=self._filename_suffix,
            storage_options=self._storage_options,
        )

    def _get_file_writer(self) -> FileWriter:
        """The run's FileWriter; after close(), a new event file in the same run (as the peers do)."""
        fw = self.file_writer
        if fw is None:
            with self._lock:
                if self.file_writer is None:
                    self.file_writer = self._new_file_writer(self._logdir)
                    self.all_writers = {self._logdir: self.file_writer}
                fw = self.file_writer
        return fw

    def _writer(self) -> FileWriter:
        """The run's FileWriter, checked usable before any costly encoding."""
        fw = self.file_writer or self._get_file_writer()
        fw._check_open()
        return fw

    def _sub_writer(self, logdir: str) -> FileWriter:
        """The FileWriter of a sub-run (add_scalars keys, add_hparams run_name), created once."""
        self._get_file_writer()
        fw = self.all_writers.get(logdir)
        if fw is None:
            with self._lock:
                fw = self.all_writers.get(logdir)
                if fw is None:
                    fw = self.all_writers[logdir] = self._new_file_writer(logdir)
        return fw

    def _step_time(self, global_step, walltime) -> tuple:
        """(step, walltime or None) with use_metadata()'s defaults for the ones not given."""
        if self._defaults is not None:
            global_step = self._defaults[0] if global_step is None else global_step
            walltime = self._defaults[1] if walltime is None else walltime
        return _as_step(global_step), None if walltime is None else _as_walltime(walltime)

    def _add(self, fw, summary, global_step, walltime) -> None:
        step, wt = self._step_time(global_step, walltime)
        fw._write_summary(summary, step, wt, True)
        if self._async_errors:
            self._encoder.raise_error()

    def _encode(
        self,
        fw,
        method: str,
        tag: str,
        build,
        value,
        arg: str,
        args: tuple,
        global_step,
        walltime,
        check=None,
        fresh: bool = False,
    ) -> None:
        """build(tag, value as an array, *args) -> Summary: on the worker thread if async_encode, else here.

        The caller's thread converts value (torch -> numpy), runs check(array) (shapes, formats:
        errors raised here) and copies the array unless fresh; the worker builds and encodes.
        """
        if self._encoder is None:
            self._add(fw, build(tag, value, *args), global_step, walltime)
            return
        _summary._check_tag(tag)
        arr = as_array(value, arg)
        if check is not None:
            check(arr)
        snap, buf = (arr, None) if fresh or isinstance(value, (list, tuple)) else self._encoder.copy(arr)
        build = functools.partial(build, tag, snap, *args)
        self._submit(fw, method, tag, build, snap.nbytes, global_step, walltime, () if buf is None else (buf,))

    def _submit(self, fw, method: str, tag: str, build, nbytes: int, global_step, walltime, buffers=()) -> None:
        """Queue build() (-> Summary) for the worker; its record takes its place in fw's file now."""
        step, wt = self._step_time(global_step, walltime)
        wt = time.time() if wt is None else wt  # the call's time, as on the synchronous path
        encode = functools.partial(_encode_event, fw._meta_tags, build, step, wt)
        what = f"{method}(tag={tag!r}, global_step={step})"
        self._encoder.submit(fw.event_writer._state, encode, nbytes, what, buffers)
        if self._async_errors:
            self._encoder.raise_error()

    @contextlib.contextmanager
    def use_metadata(self, *, global_step=None, walltime=None):
        """Within the block, add_* calls without global_step/walltime use these (tensorboardX)."""
        if self._defaults is not None:
            raise RuntimeError("use_metadata: default metadata is already set (blocks do not nest)")
        if global_step is None and walltime is None:
            raise ValueError("use_metadata: expected global_step or walltime, got neither")
        self._defaults = (global_step, walltime)
        try:
            yield self
        finally:
            self._defaults = None

    def add_scalar(
        self,
        tag: str,
        scalar_value,
        global_step=None,
        walltime=None,
        new_style: bool = False,
        double_precision: bool = False,
        display_name: str = "",
        summary_description: str = "",
    ) -> None:
        """Write one scalar (float32 simple_value, or a tensor with new_style) at global_step."""
        t = type(scalar_value)
        v = scalar_value if t is float else _as_float(scalar_value)
        if new_style or display_name or summary_description or self._defaults is not None:
            self._add(
                self._writer(),
                _summary.scalar_tensor(tag, v, new_style, double_precision, display_name, summary_description),
                global_step,
                walltime,
            )
            return
        step = global_step if type(global_step) is int else _as_step(global_step)
        fw = self.file_writer or self._get_file_writer()
        prefix = fw._scalar_prefixes.get(tag) or fw._scalar_prefix(tag)  # FileWriter._add_scalar, one call fewer
        fw._write_framed(_scalar_record(time.time() if walltime is None else _as_walltime(walltime), step, prefix, v))
        if self._async_errors:
            self._encoder.raise_error()

    def add_scalars(self, main_tag: str, tag_scalar_dict: dict, global_step=None, walltime=None) -> None:
        """One scalar per key, each in sub-run <log_dir>/<main_tag>_<key> under tag main_tag."""
        if not isinstance(tag_scalar_dict, dict):
            raise TypeError(f"tag_scalar_dict: expected a dict, got {type(tag_scalar_dict).__name__}")
        step, wt = self._step_time(global_step, walltime)
        wt = time.time() if wt is None else wt
        values = {k: _as_float(v, f"tag_scalar_dict[{k!r}]") for k, v in tag_scalar_dict.items()}
        subs = [main_tag.replace("/", "_") + "_" + key for key in values]
        for key, sub in zip(values, subs):  # all checked before any is written
            _check_inside(self._logdir, sub, f"tag_scalar_dict key {key!r}")
        self._writer()
        for sub, v in zip(subs, values.values()):
            sub = self._logdir + "/" + sub
            self._sub_writer(sub)._add_scalar(main_tag, v, step, wt)
            if self._scalars_for_json is not None:
                self._scalars_for_json.setdefault(sub, []).append([wt, step, v])
        if self._async_errors:
            self._encoder.raise_error()

    def export_scalars_to_json(self, path) -> None:
        """Write {sub-run: [[walltime, step, value], ...]} of add_scalars since the last export (tensorboardX).

        Needs SummaryWriter(..., keep_scalars_for_json=True). path is written whole or not at
        all (see tbwriter.output: a FIFO or a device is written into as a stream).
        """
        import json

        from tbwriter.output import write_output

        if self._scalars_for_json is None:
            raise WriterStateError(
                "export_scalars_to_json: this writer keeps no add_scalars values; "
                "create it with SummaryWriter(..., keep_scalars_for_json=True)"
            )
        data = self._scalars_for_json
        if "://" in self._logdir:  # sub-runs named without the URL's login
            from tbwriter.remote import redact

            data = {redact(k): v for k, v in data.items()}
        write_output(path, lambda f: json.dump(data, f), text=True)
        self._scalars_for_json = {}

    def add_histogram(
        self, tag: str, values, global_step=None, bins="tensorflow", walltime=None, max_bins=None
    ) -> None:
        """Histogram of values (TensorFlow's buckets by default) at global_step; large ones on the worker."""
        fw = self._writer()
        if self._encoder is not None:
            arr = values if type(values) is np.ndarray else as_array(values, "values")
            if arr.size > ASYNC_MIN_VALUES:
                _summary.check_bins(bins, tag)
                self._encode(
                    fw,
                    "add_histogram",
                    tag,
                    _summary.histogram,
                    arr,
                    "values",
                    (bins, max_bins),
                    global_step,
                    walltime,
                    fresh=isinstance(values, (list, tuple)),
                )
                return
            values = arr
        self._add(fw, _summary.histogram(tag, values, bins=bins, max_bins=max_bins), global_step, walltime)

    def add_histogram_raw(
        self, tag: str, min, max, num, sum, sum_squares, bucket_limits, bucket_counts, global_step=None, walltime=None
    ) -> None:
        """Histogram from precomputed statistics and buckets."""
        fw = self._writer()
        self._add(
            fw,
            _summary.histogram_raw(tag, min, max, num, sum, sum_squares, bucket_limits, bucket_counts),
            global_step,
            walltime,
        )

    def add_image(self, tag: str, img_tensor, global_step=None, walltime=None, dataformats: str = "CHW") -> None:
        """One image (uint8, or float in [0, 1]) PNG-encoded (on the worker)."""
        fw = self._writer()
        self._encode(
            fw,
            "add_image",
            tag,
            _summary.image,
            img_tensor,
            "tensor",
            (dataformats,),
            global_step,
            walltime,
            check=lambda a: _summary.check_image_size(tag, _image.to_hwc(a, dataformats)),
        )

    def add_images(self, tag: str, img_tensor, global_step=None, walltime=None, dataformats: str = "NCHW") -> None:
        """A batch of images (an N-D array, or a list of CHW/HWC arrays) shown as one grid image."""
        fw = self._writer()
        fresh = isinstance(img_tensor, (list, tuple))
        if fresh:
            img_tensor = np.stack([as_array(x, f"img_tensor[{i}]") for i, x in enumerate(img_tensor)])
            if isinstance(dataformats, str) and len(dataformats) == img_tensor.ndim - 1:
                dataformats = "N" + dataformats  # each item's format (CHW), as tensorboardX takes a list
        self._encode(
            fw,
            "add_images",
            tag,
            _summary.images,
            img_tensor,
            "tensor",
            (dataformats,),
            global_step,
            walltime,
            check=lambda a: _image.to_nhwc(a, dataformats),
            fresh=fresh,
        )

    def add_image_with_boxes(
        self,
        tag: str,
        img_tensor,
        box_tensor,
        global_step=None,
        walltime=None,
        rescale=1,
        dataformats: str = "CHW",
        labels=None,
    ) -> None:
        """One image with red (xmin, ymin, xmax, ymax) boxes and optional labels drawn in (Pillow)."""
        fw = self._writer()
        if isinstance(rescale, str):  # tensorboardX's positional order: dataformats comes sixth
            rescale, dataformats = 1, rescale
        if self._encoder is not None:  # the worker draws: its own copies of the boxes and labels
            box_tensor = np.array(as_array(box_tensor, "box_tensor", allow_empty=True), copy=True)
            labels = labels if labels is None or isinstance(labels, str) else list(labels)
        self._encode(
            fw,
            "add_image_with_boxes",
            tag,
            _boxed_image,
            img_tensor,
            "img_tensor",
            (box_tensor, labels, rescale, dataformats),
            global_step,
            walltime,
            check=lambda a: _image.to_hwc(a, dataformats),
        )

    def add_figure(self, tag: str, figure, global_step=None, close: bool = True, walltime=None) -> None:
        """A matplotlib figure (or a list of them, as one grid) rendered to an image (matplotlib)."""
        from tbwriter.figure import figure_to_rgb

        fw = self._writer()
        # matplotlib is not thread-safe: it renders here; the PNG is encoded on the worker.
        if isinstance(figure, (list, tuple)):
            pixels = np.stack([figure_to_rgb(f, close) for f in figure])
            self._encode(
                fw, "add_figure", tag, _summary.images, pixels, "tensor", ("NHWC",), global_step, walltime, fresh=True
            )
        else:
            self._encode(
                fw,
                "add_figure",
                tag,
                _summary.image,
                figure_to_rgb(figure, close),
                "tensor",
                ("HWC",),
                global_step,
                walltime,
                fresh=True,
            )

    def add_video(
        self, tag: str, vid_tensor, global_step=None, fps=4, walltime=None, dataformats: str = "NTCHW"
    ) -> None:
        """Clips (N, T, C, H, W) tiled into one animated GIF for the images dashboard (Pillow)."""
        from tbwriter import video

        fw = self._writer()
        self._encode(
            fw, "add_video", tag, video.video, vid_tensor, "vid_tensor", (fps, dataformats), global_step, walltime
        )

    def add_audio(self, tag: str, snd_tensor, global_step=None, sample_rate=44100, walltime=None) -> None:
        """A clip of samples in [-1, 1] as a 16-bit WAV for the audio dashboard."""
        from tbwriter import audio

        fw = self._writer()
        self._encode(fw, "add_audio", tag, audio.audio, snd_tensor, "snd_tensor", (sample_rate,), global_step, walltime)

    def add_text(self, tag: str, text_string: str, global_step=None, walltime=None) -> None:
        """Markdown text for the text dashboard."""
        fw = self._writer()
        self._add(fw, _summary.text(tag, text_string), global_step, walltime)

    def add_tensor(self, tag: str, tensor, global_step=None, walltime=None) -> None:
        """A whole tensor as a TensorProto (torch's add_tensor; plugin name "tensor")."""
        fw = self._writer()
        self._add(fw, _summary.tensor(tag, tensor), global_step, walltime)

    def add_mesh(
        self, tag: str, vertices, colors=None, faces=None, config_dict=None, global_step=None, walltime=None
    ) -> None:
        """A mesh or point cloud for the mesh dashboard: vertices (B, N, 3), colors, faces."""
        from tbwriter import mesh

        fw = self._writer()
        self._add(fw, mesh.mesh(tag, vertices, colors, faces, config_dict), global_step, walltime)

    def add_embedding(
        self, mat, metadata=None, label_img=None, global_step=None, tag: str = "default", metadata_header=None
    ) -> None:
        """Points (N, D) with labels and sprite images for the projector, in <run>/<step>/<tag>/."""
        from tbwriter import projector

        self._writer()
        step, _ = self._step_time(global_step, None)
        if "://" in self._logdir:
            raise ValueError(
                f"add_embedding: the projector files are written to local log_dirs only, "
                f"got the URL {self._logdir.split('://')[0]}://..."
            )
        if not self._write_to_disk:
            return
        if self._encoder is None:
            projector.write_embedding(self._logdir, mat, metadata, label_img, step, tag, metadata_header)
            return
        # The worker writes the files; it gets its own copies of the arrays and of the labels' list.
        m = _snapshot(mat, as_array(mat, "mat"))
        if label_img is not None:
            label_img = _snapshot(label_img, as_array(label_img, "label_img"))
        if metadata is not None and not isinstance(metadata, (str, bytes)) and hasattr(metadata, "__len__"):
            metadata = list(metadata)
        projector.check_embedding(m, metadata, tag, metadata_header)  # a refusal comes now, before any file
        logdir = self._logdir

        def write() -> None:  # files only, no event record
            projector.write_embedding(logdir, m, metadata, label_img, step, tag, metadata_header)

        nbytes = m.nbytes + (0 if label_img is None else label_img.nbytes)
        self._encoder.submit(None, write, nbytes, f"add_embedding(tag={tag!r}, global_step={step})")
        if self._async_errors:
            self._encoder.raise_error()

    def add_pr_curve(
        self, tag: str, labels, predictions, global_step=None, num_thresholds: int = 127, weights=None, walltime=None
    ) -> None:
        """Precision-recall curve of binary labels against predicted probabilities."""
        fw = self._writer()
        self._add(
            fw,
            _summary.pr_curve(tag, labels, predictions, num_thresholds=num_thresholds, weights=weights),
            global_step,
            walltime,
        )

    def add_pr_curve_raw(
        self,
        tag: str,
        true_positive_counts,
        false_positive_counts,
        true_negative_counts,
        false_negative_counts,
        precision,
        recall,
        global_step=None,
        num_thresholds: int = 127,
        weights=None,
        walltime=None,
    ) -> None:
        """Precision-recall curve from precomputed counts, precision and recall (weights unused, as in the peers)."""
        fw = self._writer()
        self._add(
            fw,
            _summary.pr_curve_raw(
                tag,
                (
                    true_positive_counts,
                    false_positive_counts,
                    true_negative_counts,
                    false_negative_counts,
                    precision,
                    recall,
                ),
                num_thresholds,
            ),
            global_step,
            walltime,
        )

    def add_custom_scalars(self, layout: dict) -> None:
        """Custom scalars dashboard layout: {category: {title: ["Multiline"|"Margin", tags]}}."""
        fw = self._writer()
        self._add(fw, _summary.custom_scalars(layout), 0, None)

    def add_custom_scalars_multilinechart(self, tags, category: str = "default", title: str = "untitled") -> None:
        """A custom scalars layout with one chart of several tags' lines."""
        self.add_custom_scalars({category: {title: ["Multiline", tags]}})

    def add_custom_scalars_marginchart(self, tags, category: str = "default", title: str = "untitled") -> None:
        """A custom scalars layout with one margin chart of tags [value, lower, upper]."""
        self.add_custom_scalars({category: {title: ["Margin", tags]}})

    def add_graph(self, model, input_to_model=None, verbose=False, use_strict_trace=True) -> None:
        """The graph of a torch nn.Module traced on input_to_model, or a GraphDef / object with as_graph_def()."""
        fw = self._writer()
        if hasattr(model, "forward") and callable(model):
            from tbwriter.torch_graph import graph_def

            model = graph_def(model, input_to_model, verbose, use_strict_trace)
        fw.add_graph(model)

    def add_onnx_graph(self, onnx_model_file=None, *, prototxt=None) -> None:
        """The graph of an .onnx file (onnx imported here); tensorboardX's keyword, or torch's prototxt=."""
        from tbwriter.model_files import onnx_graph_def

        if (onnx_model_file is None) == (prototxt is None):
            raise TypeError(
                "add_onnx_graph: expected the .onnx path as onnx_model_file or prototxt, "
                f"got {onnx_model_file!r} and {prototxt!r}"
            )
        self._writer().add_graph(onnx_graph_def(prototxt if onnx_model_file is None else onnx_model_file))

    def add_openvino_graph(self, xmlname) -> None:
        """The graph of an OpenVINO IR .xml file (tensorboardX)."""
        from tbwriter.model_files import openvino_graph_def

        self._writer().add_graph(openvino_graph_def(xmlname))

    def add_hparams(
        self,
        hparam_dict: dict,
        metric_dict: dict,
        hparam_domain_discrete=None,
        run_name=None,
        global_step=None,
        *,
        name=None,
    ) -> None:
        """Hyperparameters and metrics of this run (or of sub-run run_name/name) for the HPARAMS tab.

        torch's order; tensorboardX's third positional is `name`, so a str there is taken as it.
        Written into the run itself, unlike the peers' new timestamped sub-run (see
        FileWriter.add_hparams).
        """
        if isinstance(hparam_domain_discrete, str):
            hparam_domain_discrete, name = None, hparam_domain_discrete
        if name is not None and run_name is not None and name != run_name:
            raise ValueError(f"add_hparams: name={name!r} and run_name={run_name!r} both name the sub-run; give one")
        run_name = name if run_name is None else run_name
        _check_hparams_args(metric_dict, hparam_domain_discrete)  # before a sub-run is created
        if run_name is not None:
            _check_inside(self._logdir, os.fspath(run_name), f"run_name {run_name!r}")
        fw = self._writer() if run_name is None else self._sub_writer(os.path.join(self._logdir, run_name))
        fw.add_hparams(hparam_dict, metric_dict, hparam_domain_discrete, global_step, start_time_secs=self._start_time)

    def flush(self) -> None:
        """Write everything submitted so far (waiting for the worker) and hand it to the OS; a no-op after close()."""
        if self._encoder is not None:
            self._encoder.wait()
        for fw in list((self.all_writers or {}).values()):
            fw.flush()
        if self._async_errors:
            self._encoder.raise_error()

    def close(self) -> None:
        """Flush and close every file; a later add_* opens a new event file in the same run."""
        if self._encoder is not None:
            self._encoder.close()  # every job done, the worker ended: nothing more for the files
        with self._lock:
            # Writers leave _closing only once closed: a retry after an interrupt closes the rest.
            self._closing += [fw for fw in (self.all_writers or {}).values() if fw not in self._closing]
            self.file_writer = self.all_writers = None
        # A writer whose close raised stays in _closing: on a store that failed, its records
        # are still queued, and the next close() retries them (a local file's error is final).
        errors = []
        i = 0
        while i < len(self._closing):
            try:
                self._closing[i].close()
            except OSError as e:
                errors.append(e)
                i += 1
                continue
            del self._closing[i]
        if errors:
            raise errors[0]
        if self._async_errors:
            self._encoder.raise_error()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_inside(logdir: str, name: str, argument: str) -> None:
    """Refuse a sub-run name that is absolute or holds a '..': its event files would land outside logdir."""
    parts = name.replace(os.sep, "/").split("/")
    if os.path.isabs(name) or ".." in parts:
        if "://" in logdir:  # a URL's login is never shown
            from tbwriter.remote import redact

            logdir = redact(logdir)
        raise ValueError(f"{argument}: a sub-run must stay inside the log dir {logdir}; no absolute path or '..'")


def _with_discrete_domains(exp, domains: dict):
    """The experiment summary with domain_discrete set for the hparams named in domains."""
    from tbwriter.proto import hparams_pb2

    value = exp.value[0]
    data = hparams_pb2.HParamsPluginData()
    data.ParseFromString(value.metadata.plugin_data.content)
    names = {info.name for info in data.experiment.hparam_infos}
    for name in domains:
        if name not in names:
            raise ValueError(f"hparam_domain_discrete: {name!r} is not a key of hparam_dict")
    for info in data.experiment.hparam_infos:
        if info.name in domains:
            info.domain_discrete.Clear()
            info.domain_discrete.extend(list(domains[info.name]))
    value.metadata.plugin_data.content = data.SerializeToString()
    return exp
