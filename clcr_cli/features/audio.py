"""Audio: decode to mono float32 at one sample rate, then log-mel and/or MFCC frames.

Audio files (.wav/.flac/.ogg/.mp3, anything libsndfile reads) are decoded with soundfile;
audio tracks inside video containers (.mp4/.avi/.flv/.mkv/.webm/.mov) with PyAV, whose
wheel bundles FFmpeg. Both paths share the rest: channels are averaged to mono,
the signal is cut to ``window`` (seconds from the first decoded sample), resampled with
librosa (soxr) and truncated to ``max_seconds``.

Decoding stops :data:`READ_MARGIN_SECONDS` after the last second that can be kept (the
window's end, or its start plus ``max_seconds``), so a long or highly compressed file
(an hour of silence is a few hundred kB of FLAC) costs memory for what is kept, not for
what it holds; the margin covers the resampling filter's reach, so the samples kept are
those of resampling the whole clip. An empty clip, or one holding NaN or infinite
samples (float WAVs can), is a :class:`~clcr_cli.errors.DataError` naming the file.

Features follow the audio-visual literature (OGM-GE and successors): a power mel
spectrogram in absolute decibels (``10 log10(max(S, 1e-10))``, no per-clip reference,
so loudness stays comparable between clips), and MFCCs computed from that same
log-mel (DCT-II, orthonormal). Output is time-major (T, F): one row per ``hop_length``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.window import check_window

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.container import InputContainer

AUDIO_KINDS = ("logmel", "mfcc", "logmel+mfcc")
CONTAINER_SUFFIXES = (".mp4", ".avi", ".flv", ".mkv", ".webm", ".mov", ".m4a")
# decoded past the last second kept: soxr's filter reaches a few ms beyond a cut, and one
# second more keeps the samples bit-identical to resampling the whole clip (tested 1-192 kHz)
READ_MARGIN_SECONDS = 1.0


def _frames_in(seconds: float | None, rate: int) -> int | None:
    """How many frames at ``rate`` cover the first ``seconds`` (None: all of them)."""
    return None if seconds is None else math.ceil(seconds * rate)


def _read_soundfile(path: Path, seconds: float | None) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 of the first ``seconds`` and the native rate, via libsndfile."""
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as f:
            rate = int(f.samplerate)
            frames = _frames_in(seconds, rate)
            samples = f.read(-1 if frames is None else frames, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise DataError(path, f"cannot decode audio ({error})") from error
    return samples.T, rate


def _read_container(path: Path, seconds: float | None) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 of the first ``seconds`` of the first audio stream and
    its native rate, via PyAV."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError(path, "no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.rate or stream.codec_context.sample_rate or 0)
            if rate <= 0:
                raise DataError(path, "audio stream without a sample rate")
            chunks = _decode_stream(container, stream, _frames_in(seconds, rate))
    except av.FFmpegError as error:
        raise DataError(path, f"cannot decode audio ({error})") from error
    if not chunks:
        raise DataError(path, "empty audio")
    return np.concatenate(chunks, axis=1).astype(np.float32), rate


def _decode_stream(
    container: InputContainer, stream: AudioStream, frames: int | None
) -> list[np.ndarray]:
    """Planar float chunks of ``stream``, stopping once ``frames`` samples are decoded."""
    import av

    to_float = av.AudioResampler(format="fltp")  # planar float, layout and rate kept
    chunks: list[np.ndarray] = []
    decoded = 0
    for frame in container.decode(stream):
        for plane in to_float.resample(frame):
            chunks.append(plane.to_ndarray())
            decoded += chunks[-1].shape[1]
        if frames is not None and decoded >= frames:
            return chunks
    return chunks + [plane.to_ndarray() for plane in to_float.resample(None)]


def _seconds_needed(window: tuple[float, float] | None, max_seconds: float | None) -> float | None:
    """Seconds from the file's start that can reach the output, margin included (None: all)."""
    end = None if window is None else window[1]
    if max_seconds is None:
        return end
    start = 0.0 if window is None else window[0]
    kept_until = start + max_seconds + READ_MARGIN_SECONDS
    return kept_until if end is None else min(end, kept_until)


def load_audio(
    path: Path,
    sample_rate: int = 16000,
    window: tuple[float, float] | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``sample_rate``, cut to ``window`` (seconds)."""
    import librosa

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    if window is not None:
        check_window(path, window)
    read = _read_container if path.suffix.lower() in CONTAINER_SUFFIXES else _read_soundfile
    channels, rate = read(path, _seconds_needed(window, max_seconds))
    y = channels.mean(axis=0)
    if window is not None:
        y = y[int(round(window[0] * rate)) : int(round(window[1] * rate))]
    if y.size == 0:
        raise DataError(
            path, "empty audio" if window is None else f"empty audio in window {window}"
        )
    if not np.isfinite(y).all():
        raise DataError(path, "audio holds NaN or infinite samples")
    if rate != sample_rate:
        y = librosa.resample(y, orig_sr=rate, target_sr=sample_rate)
    if max_seconds is not None:
        y = y[: int(round(max_seconds * sample_rate))]
    return np.ascontiguousarray(y, dtype=np.float32)


def _check_kind(kind: str, n_mels: int, n_mfcc: int) -> None:
    if kind not in AUDIO_KINDS:
        raise ConfigError(
            f"unknown audio feature kind {kind!r}; choose from {', '.join(AUDIO_KINDS)}"
        )
    if "mfcc" in kind and not 1 <= n_mfcc <= n_mels:
        raise ConfigError(f"n_mfcc ({n_mfcc}) must lie in 1..n_mels ({n_mels})")


def audio_features(
    y: np.ndarray,
    sample_rate: int,
    kind: str = "logmel",
    n_mels: int = 64,
    n_mfcc: int = 20,
    hop_length: int = 160,
    n_fft: int = 400,
) -> np.ndarray:
    """(T, F) float32 frames, ``T = 1 + len(y) // hop_length`` (centred STFT)."""
    import librosa

    _check_kind(kind, n_mels, n_mfcc)
    mel = librosa.feature.melspectrogram(
        y=np.asarray(y, dtype=np.float32),
        sr=sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        power=2.0,
    )
    logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    parts = []
    if "logmel" in kind:
        parts.append(logmel)
    if "mfcc" in kind:
        parts.append(librosa.feature.mfcc(S=logmel, n_mfcc=n_mfcc))
    return np.ascontiguousarray(np.concatenate(parts, axis=0).T, dtype=np.float32)
