"""Command line: `python -m tbwriter inspect PATH` and `python -m tbwriter export PATH --csv OUT`.

Exit codes: 0 all readable (a truncated last record is only warned about), 1 a corrupt record
or an unreadable file (what was readable is still printed / exported), 2 bad arguments or a
path that does not exist or holds no event files.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import itertools
import json
import math
import os
import re
import sys
import warnings
from typing import Iterator, Optional, TextIO

import numpy as np

from tbwriter.reader import (
    CorruptRecordError,
    SkippedFileWarning,
    TagKinds,
    Truncation,
    event_files,
    read_events,
)
from tbwriter.output import Output
from tbwriter.scalars import RunColumns


class _Problems:
    """Collects truncations (warnings) and corrupt/unreadable files (errors), printed to stderr."""

    def __init__(self, stderr: TextIO):
        self.stderr = stderr
        self.errors = 0

    def truncated(self, t: Truncation) -> None:
        print(f"warning: {t} (skipped; a writer killed mid-write leaves this)", file=self.stderr)

    def error(self, message: str) -> None:
        self.errors += 1
        print(f"error: {message}", file=self.stderr)

    @contextlib.contextmanager
    def reading(self, path: str) -> Iterator[None]:
        """Report a corrupt record or an unreadable file as an error and go on with the next file."""
        try:
            yield
        except CorruptRecordError as e:
            # Nothing after a corrupt record can be trusted; the next file may be fine.
            self.error(str(e))
        except OSError as e:
            self.error(f"{path}: cannot read: {e.strerror or e}")


def _walk(runs: dict[str, list[str]], problems: _Problems) -> Iterator[tuple[str, TagKinds, object]]:
    """Yield (run, the run's TagKinds, event) for all readable events; report problems, go on."""
    for run, paths in runs.items():
        kinds = TagKinds()
        for path in paths:
            with problems.reading(path):
                for event in read_events(path, on_truncated=problems.truncated):
                    yield run, kinds, event


class _TagStats:
    """Kind, value count and step range of one tag in one run."""

    __slots__ = ("kind", "count", "first", "last")

    def __init__(self, kind: str):
        self.kind = kind
        self.count = 0
        self.first = None
        self.last = None

    def add(self, step: int) -> None:
        self.count += 1
        self.first = step if self.first is None else min(self.first, step)
        self.last = step if self.last is None else max(self.last, step)


# Events that are not summaries get a pseudo-tag in angle brackets, since no real tag has one.
_EVENT_KINDS = {
    "graph_def": ("<graph>", "graph"),
    "meta_graph_def": ("<meta_graph>", "meta_graph"),
    "session_log": ("<session_log>", "session_log"),
    "log_message": ("<log_message>", "log_message"),
}


_COLUMNS = ("TAG", "KIND", "STEPS", "COUNT")
_MAX_WIDTH = 60  # columns pad to at most this: a longer tag is printed whole and only its row is wider


def _printable(text: str) -> str:
    """text with each non-printable character escaped (\\n, \\x1b, \\u200b): nothing reaches the terminal raw."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _inspect(runs: dict[str, list[str]], out: TextIO, problems: _Problems) -> None:
    """Print, per run, each tag's kind, step range and count."""
    stats: dict[str, dict[str, _TagStats]] = {run: {} for run in runs}
    events = {run: 0 for run in runs}
    for run, kinds, event in _walk(runs, problems):
        events[run] += 1
        tags = stats[run]
        what = event.WhichOneof("what")
        if what == "summary":
            for value in event.summary.value:
                entry = tags.get(value.tag)
                if entry is None:
                    entry = tags[value.tag] = _TagStats(kinds.kind(value))
                entry.add(event.step)
        elif what == "tagged_run_metadata":
            tag = event.tagged_run_metadata.tag
            tags.setdefault(tag, _TagStats("run_metadata")).add(event.step)
        elif what in _EVENT_KINDS:
            tag, kind = _EVENT_KINDS[what]
            tags.setdefault(tag, _TagStats(kind)).add(event.step)
    for run, tags in stats.items():
        nfiles = len(runs[run])
        print(f"run {_printable(run)}  ({nfiles} file{'s' * (nfiles != 1)}, {events[run]} events)", file=out)
        if not tags:
            print("  (no tags)", file=out)
            continue
        rows = [
            (
                _printable(tag),
                _printable(s.kind),
                str(s.first) if s.first == s.last else f"{s.first}..{s.last}",
                str(s.count),
            )
            for tag, s in sorted(tags.items())
        ]
        widths = [min(_MAX_WIDTH, max(len(h), *(len(r[i]) for r in rows))) for i, h in enumerate(_COLUMNS)]
        for row in [_COLUMNS, *rows]:
            print("  " + "  ".join(f"{c:<{w}}" for c, w in zip(row, widths)).rstrip(), file=out)


def _texts(values: np.ndarray) -> list:
    """Shortest text that reads back to each stored number (float32 values as float32, others as double)."""
    if values.dtype == np.float32:
        return values.astype(str).tolist()  # NumPy's shortest round-trip digits, as str(np.float32(v))
    return [repr(v) for v in values.tolist()]


def _json_number(number: float, text: str) -> str:
    """A JSON token for a number: its text, or "NaN"/"Infinity"/"-Infinity" as strings (strict JSON has none)."""
    if math.isfinite(number):
        return text
    if math.isnan(number):
        return '"NaN"'
    return '"Infinity"' if number > 0 else '"-Infinity"'


def _scalars(runs, problems: _Problems, tag_filter: Optional[re.Pattern], as_written: bool) -> Iterator[tuple]:
    """Yield (run, tag, ScalarSeries) for every scalar tag, run by run, read by the columnar reader."""
    for run, paths in runs.items():
        columns = RunColumns(
            run, on_bad_value=lambda r, step, e: problems.error(f"run {r}: step {step}: {e}"), as_written=as_written
        )
        for path in paths:
            with problems.reading(path):  # what came before a corrupt record is kept
                columns.read_file(path, on_truncated=problems.truncated)
        for tag, series in columns.series().items():
            if tag_filter is None or tag_filter.search(tag):
                yield run, tag, series


def _export(
    runs,
    csv_path: Optional[str],
    json_path: Optional[str],
    tag_filter,
    problems: _Problems,
    stdout: TextIO,
    as_written: bool = False,
) -> int:
    """Write every scalar as CSV and/or JSON Lines, streaming ("-" is stdout); return the number of rows."""
    pending = []
    try:
        csv_out = Output(csv_path, text=True, stdout=stdout) if csv_path else None
        json_out = Output(json_path, text=True, stdout=stdout) if json_path else None
        pending = [out for out in (csv_out, json_out) if out]
        for out in pending:
            out.open()
        if csv_out:
            writer = csv.writer(csv_out.file, lineterminator="\n")
            writer.writerow(["run", "tag", "step", "wall_time", "value"])
        rows = 0
        for run, tag, series in _scalars(runs, problems, tag_filter, as_written):
            texts = _texts(series.values)
            steps = series.steps.tolist()
            walls = series.wall_times.tolist()
            if csv_out:
                writer.writerows(zip(itertools.repeat(run), itertools.repeat(tag), steps, map(repr, walls), texts))
            if json_out:
                prefix = f'{{"run": {json.dumps(run)}, "tag": {json.dumps(tag)}, "step": '
                json_out.file.writelines(
                    f'{prefix}{step}, "wall_time": {_json_number(wall, repr(wall))}, '
                    f'"value": {_json_number(number, text)}}}\n'
                    for step, wall, number, text in zip(steps, walls, series.values.tolist(), texts)
                )
            rows += len(steps)
        while pending:
            pending[0].commit()
            pending.pop(0)
        return rows
    finally:
        for out in pending:  # interrupted or failed: leave nothing half-written behind
            out.discard()


def _output_problem(csv_path: Optional[str], json_path: Optional[str], runs: dict) -> Optional[str]:
    """Why these outputs cannot be written (one file named twice, or an input file), or None; checked before writing."""

    def same(a: str, b: str) -> bool:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        try:
            return os.path.samefile(a, b)  # hard links
        except OSError:
            return False

    if csv_path and json_path and same(csv_path, json_path):
        return f"--csv and --json name the same file ({csv_path}); give two different paths"
    for option, out in (("--csv", csv_path), ("--json", json_path)):
        if out and "://" not in out and os.path.exists(out):
            for paths in runs.values():
                if any("://" not in p and same(out, p) for p in paths):
                    return f"{option} {out} is one of the event files being read; give another path"
    return None


@functools.lru_cache(maxsize=None)  # built once: main() is called in loops (tests, fuzzing)
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tbwriter",
        description="Look inside TensorBoard event files without starting TensorBoard.",
        epilog="Exit codes: 0 ok (truncated last records are warned about and skipped), "
        "1 corrupt record or unreadable file (named with its byte offset; what was readable "
        "is still printed/exported), 2 bad arguments or path.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ins = sub.add_parser(
        "inspect",
        help="per run: each tag's kind, step range and count",
        description="Print, per run, each tag with its kind, step range and count.",
    )
    ins.add_argument(
        "path",
        metavar="LOGDIR_OR_FILE",
        help="a log directory (searched recursively) or one event file; a path or URL (s3://...)",
    )
    exp = sub.add_parser(
        "export",
        help="write every scalar as CSV and/or JSON Lines",
        description="Write every scalar as rows run,tag,step,wall_time,value, grouped by run and tag (sorted), "
        "each tag's rows in file order, without the steps a restart orphaned (as TensorBoard shows them; "
        "--as-written keeps every record). CSV has a header line; "
        "JSON is JSON Lines (one object per line). Values are written with the shortest text "
        "that reads back to the stored float32/float64; NaN and infinities are the strings "
        '"NaN", "Infinity", "-Infinity" in JSON. Outputs are written to a temp file and '
        "renamed into place when complete; a FIFO or a character device is written into as a stream.",
    )
    exp.add_argument(
        "path",
        metavar="LOGDIR_OR_FILE",
        help="a log directory (searched recursively) or one event file; a path or URL (s3://...)",
    )
    exp.add_argument("--csv", metavar="OUT.csv", help="write CSV here ('-': standard output)")
    exp.add_argument("--json", metavar="OUT.jsonl", help="write JSON Lines here ('-': standard output)")
    exp.add_argument("--tag", metavar="REGEX", help="only tags where this regular expression matches (re.search)")
    exp.add_argument(
        "--as-written",
        action="store_true",
        help="every scalar record as written, also the steps TensorBoard drops after a restart "
        "(SessionLog START from purge_step, or steps going backwards in files without file_version)",
    )
    return p


class _Redacted:
    """A text stream that removes URL logins and secret query parameters from what is written to it."""

    def __init__(self, stream: TextIO, url: str):
        from tbwriter.remote import redact, secret_strings

        self.stream = stream
        self.redact = redact
        self.hidden = secret_strings(url)

    def write(self, text: str) -> int:
        return self.stream.write(self.redact(text, self.hidden))

    def flush(self) -> None:
        self.stream.flush()


def main(argv: Optional[list[str]] = None, stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> int:
    """Run the command line with argv (default sys.argv[1:]); return the exit code."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage and 0 on --help
        return int(e.code or 0)
    path = args.path
    if "://" in path:  # every message names the URL (or an object's) without the login in it
        stderr = _Redacted(stderr, path)
    try:
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always", SkippedFileWarning)
            runs = event_files(path)
        for w in skipped:
            print(f"warning: {w.message}", file=stderr)
    except FileNotFoundError:
        print(f"tbwriter: error: no such file or directory: {path}", file=stderr)
        return 2
    except OSError as e:
        print(f"tbwriter: error: cannot read {path}: {e.strerror or e}", file=stderr)
        return 2
    except ValueError as e:  # a URL whose scheme is unknown or whose implementation is missing
        print(f"tbwriter: error: {e}", file=stderr)
        return 2
    if not runs:
        print(f"tbwriter: error: no event files (names containing 'tfevents') under {path}", file=stderr)
        return 2
    problems = _Problems(stderr)
    if args.command == "inspect":
        _inspect(runs, stdout, problems)
    else:
        if not args.csv and not args.json:
            print("tbwriter export: error: give --csv OUT.csv and/or --json OUT.jsonl", file=stderr)
            return 2
        tag_filter = None
        if args.tag is not None:
            try:
                tag_filter = re.compile(args.tag)
            except re.error as e:
                print(f"tbwriter export: error: --tag: not a regular expression: {args.tag!r} ({e})", file=stderr)
                return 2
        problem = _output_problem(args.csv, args.json, runs)
        if problem:
            print(f"tbwriter export: error: {problem}", file=stderr)
            return 2
        for out in (args.csv, args.json):
            if out and "://" in out:
                print(f"tbwriter export: error: outputs are local files, got the URL {out}", file=stderr)
                return 2
            if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
                print(f"tbwriter export: error: output directory does not exist: {out}", file=stderr)
                return 2
        try:
            rows = _export(runs, args.csv, args.json, tag_filter, problems, stdout, args.as_written)
        except OSError as e:  # the output side: the inputs' errors are reported per file
            target = e.filename or " / ".join(p for p in (args.csv, args.json) if p)
            print(f"tbwriter export: error: cannot write {target}: {e.strerror or e}", file=stderr)
            return 2
        outs = [p for p in (args.csv, args.json) if p]
        # An output streamed to stdout (or a FIFO or device, maybe the same) must not get the summary in it.
        streamed = any(p == "-" or (os.path.exists(p) and not os.path.isfile(p)) for p in outs)
        summary = f"{rows} scalars from {len(runs)} run{'s' * (len(runs) != 1)} written to {' and '.join(outs)}"
        print(summary, file=stderr if streamed else stdout)
    return 1 if problems.errors else 0


def _program() -> int:
    """main() as a program: a reader that closed the pipe (| head) or a Ctrl-C ends it quietly."""
    try:
        code = main()
        sys.stdout.flush()  # here, where a closed pipe can still be caught, not at interpreter exit
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush must not fail
        return 141  # 128 + SIGPIPE, as a program killed by it reports
    except KeyboardInterrupt:
        print("tbwriter: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(_program())
