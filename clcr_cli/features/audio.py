"""Audio: decode to mono float32 at one sample rate, then log-mel and/or MFCC frames.

Audio files (.wav/.flac/.ogg/.mp3, anything libsndfile reads) are decoded with soundfile;
audio tracks inside video containers (.mp4/.avi/.flv/.mkv/.webm/.mov) with PyAV, whose
wheel bundles FFmpeg. Both paths share the rest: channels are averaged to mono,
the signal is cut to ``window`` (seconds from the first decoded sample), resampled with
librosa (soxr) and truncated to ``max_seconds``.

Features follow the audio-visual literature (OGM-GE and successors): a power mel
spectrogram in absolute decibels (``10 log10(max(S, 1e-10))``, no per-clip reference,
so loudness stays comparable between clips), and MFCCs computed from that same
log-mel (DCT-II, orthonormal). Output is time-major (T, F): one row per ``hop_length``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clcr_cli.errors import ConfigError, DataError

AUDIO_KINDS = ("logmel", "mfcc", "logmel+mfcc")
CONTAINER_SUFFIXES = (".mp4", ".avi", ".flv", ".mkv", ".webm", ".mov", ".m4a")


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 and the native rate, via libsndfile."""
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise DataError(path, f"cannot decode audio ({error})") from error
    return samples.T, int(rate)


def _read_container(path: Path) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 and the native rate of the first audio stream, via PyAV."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError(path, "no audio stream")
            stream = container.streams.audio[0]
            to_float = av.AudioResampler(format="fltp")  # planar float, layout and rate kept
            chunks = [
                plane.to_ndarray()
                for frame in container.decode(stream)
                for plane in to_float.resample(frame)
            ]
            chunks += [plane.to_ndarray() for plane in to_float.resample(None)]
            rate = int(stream.rate or stream.codec_context.sample_rate)
    except av.FFmpegError as error:
        raise DataError(path, f"cannot decode audio ({error})") from error
    if not chunks:
        raise DataError(path, "empty audio")
    return np.concatenate(chunks, axis=1).astype(np.float32), rate


def _cut_window(y: np.ndarray, rate: int, window: tuple[float, float], path: Path) -> np.ndarray:
    start, end = window
    if not 0 <= start < end:
        raise DataError(path, f"bad time window {window}: need 0 <= start < end")
    return y[int(round(start * rate)) : int(round(end * rate))]


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
    if path.suffix.lower() in CONTAINER_SUFFIXES:
        channels, rate = _read_container(path)
    else:
        channels, rate = _read_soundfile(path)
    y = channels.mean(axis=0)
    if window is not None:
        y = _cut_window(y, rate, window, path)
    if y.size == 0:
        raise DataError(
            path, "empty audio" if window is None else f"empty audio in window {window}"
        )
    if rate != sample_rate:
        y = librosa.resample(y, orig_sr=rate, target_sr=sample_rate)
    if max_seconds is not None:
        y = y[: int(round(max_seconds * sample_rate))]
    return np.ascontiguousarray(y, dtype=np.float32)


def audio_feature_dim(kind: str, n_mels: int = 64, n_mfcc: int = 20) -> int:
    """F, the width of :func:`audio_features`' output for these settings."""
    _check_kind(kind, n_mels, n_mfcc)
    return {"logmel": n_mels, "mfcc": n_mfcc, "logmel+mfcc": n_mels + n_mfcc}[kind]


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
