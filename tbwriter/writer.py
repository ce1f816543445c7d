"""Placeholder until the writer lands (replaced by the tbwriter core work)."""


class SummaryWriter:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("SummaryWriter is being written")


class FileWriter(SummaryWriter):
    pass
