"""tbwriter: TensorBoard event files written by hand (numpy + protobuf + crc32c)."""

from tbwriter import summary
from tbwriter.events import EventFileError, EventFileWriter, WriterStateError
from tbwriter.writer import FileWriter, SummaryWriter

__all__ = [
    "EventFileError",
    "EventFileWriter",
    "FileWriter",
    "SummaryWriter",
    "WriterStateError",
    "read_scalars",
    "summary",
]


def __getattr__(name: str):
    """read_scalars, imported on first use: a program that only writes never loads the reader."""
    if name == "read_scalars":
        from tbwriter.scalars import read_scalars

        return read_scalars
    raise AttributeError(f"module 'tbwriter' has no attribute {name!r}")
