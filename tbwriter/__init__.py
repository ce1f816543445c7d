"""tbwriter: TensorBoard event files written by hand (numpy + protobuf + crc32c)."""
from tbwriter import summary
from tbwriter.events import EventFileError, EventFileWriter, WriterStateError
from tbwriter.writer import FileWriter, SummaryWriter

__all__ = ["EventFileError", "EventFileWriter", "FileWriter", "SummaryWriter", "WriterStateError", "summary"]
