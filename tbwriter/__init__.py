"""tbwriter: TensorBoard event files written by hand (numpy + protobuf + crc32c)."""

from tbwriter import summary
from tbwriter.events import EventFileError, EventFileWriter, WriterStateError
from tbwriter.scalars import read_scalars
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
