"""tbwriter: TensorBoard event files written by hand (numpy + protobuf + crc32c)."""
from tbwriter import summary
from tbwriter.writer import FileWriter, SummaryWriter

__all__ = ["FileWriter", "SummaryWriter", "summary"]
