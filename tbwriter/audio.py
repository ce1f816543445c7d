"""Audio: a waveform in [-1, 1] to a 16-bit PCM WAV Summary.Audio, written with the standard library."""

import io
import numbers
import wave

import numpy as np

from tbwriter._convert import as_array
from tbwriter.proto import summary_pb2


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit little-endian PCM WAV of samples shaped (frames,) or (frames, channels)."""
    frames = samples.reshape(samples.shape[0], -1)
    pcm = (np.clip(frames, -1.0, 1.0) * np.iinfo(np.int16).max).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


def audio(tag: str, snd_tensor, sample_rate: int = 44100) -> summary_pb2.Summary:
    """Summary.Audio of one clip: (frames,) or (frames, channels<=2) floats, clipped to [-1, 1] like the peers."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real) or not 0 < sample_rate < 2**31:
        raise ValueError(f"audio {tag!r}: sample_rate must be a positive number of Hz, got {sample_rate!r}")
    arr = as_array(snd_tensor, "snd_tensor").astype(np.float32)
    arr = arr.reshape(arr.shape[0], -1) if arr.ndim == 2 and arr.shape[1] <= 2 else arr.squeeze()
    if arr.ndim not in (1, 2) or arr.ndim == 2 and arr.shape[1] > 2:
        raise ValueError(
            f"audio {tag!r}: snd_tensor must be (frames,) or (frames, 1 or 2 channels), "
            f"got shape {np.shape(snd_tensor)}"
        )
    if np.isnan(arr).any():
        raise ValueError(f"audio {tag!r}: snd_tensor holds NaN")
    rate = int(sample_rate)
    clip = summary_pb2.Summary.Audio(
        sample_rate=rate,
        num_channels=1 if arr.ndim == 1 else arr.shape[1],
        length_frames=arr.shape[0],
        content_type="audio/wav",
        encoded_audio_string=wav_bytes(arr, rate),
    )
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, audio=clip)])
