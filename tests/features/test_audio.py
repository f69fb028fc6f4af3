"""Audio decoding (soundfile and PyAV paths) and log-mel / MFCC features."""

from __future__ import annotations

from pathlib import Path

import av
import librosa
import numpy as np
import pytest
import soundfile

from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.audio import AUDIO_KINDS, audio_features, load_audio

RATE = 16000


def sine(freq: float, seconds: float, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_container(path: Path, y: np.ndarray, codec: str, rate: int = RATE) -> None:
    """An audio-only container written with PyAV's bundled FFmpeg."""
    sample_format = {"aac": "fltp", "pcm_s16le": "s16"}[codec]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        for start in range(0, len(y), 1024):
            chunk = y[start : start + 1024][None]
            if sample_format == "s16":
                chunk = np.round(chunk * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(chunk, format=sample_format, layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_wav_round_trip_with_resampling_and_stereo(tmp_path: Path) -> None:
    y = sine(440, 1.0)
    soundfile.write(tmp_path / "tone.wav", y, RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "tone.wav"), y)

    stereo = np.stack([sine(440, 1.0, 22050), np.zeros(22050, np.float32)], axis=1)
    soundfile.write(tmp_path / "stereo.flac", stereo, 22050)
    mono = load_audio(tmp_path / "stereo.flac", sample_rate=RATE)
    assert mono.dtype == np.float32 and abs(len(mono) - RATE) <= 1
    # channels are averaged, so the tone keeps half its amplitude after resampling
    np.testing.assert_allclose(np.sqrt(np.mean(mono[100:-100] ** 2)), 0.25 / np.sqrt(2), rtol=0.01)


def test_window_and_max_seconds_cut(tmp_path: Path) -> None:
    y = np.arange(3 * RATE, dtype=np.float32) / (3 * RATE)
    soundfile.write(tmp_path / "ramp.wav", y, RATE, subtype="FLOAT")
    cut = load_audio(tmp_path / "ramp.wav", window=(0.5, 2.0))
    assert len(cut) == int(1.5 * RATE)
    assert cut[0] == pytest.approx(y[RATE // 2])
    assert len(load_audio(tmp_path / "ramp.wav", max_seconds=1.25)) == int(1.25 * RATE)
    with pytest.raises(DataError, match="empty audio in window"):
        load_audio(tmp_path / "ramp.wav", window=(5.0, 6.0))
    with pytest.raises(DataError, match="bad time window"):
        load_audio(tmp_path / "ramp.wav", window=(2.0, 1.0))


@pytest.mark.parametrize(
    ("codec", "suffix", "tolerance"), [("aac", ".mp4", 0.03), ("pcm_s16le", ".mov", 1e-4)]
)
def test_audio_inside_a_container_decodes_to_the_signal(
    tmp_path: Path, codec: str, suffix: str, tolerance: float
) -> None:
    y = sine(440, 1.0)
    path = tmp_path / f"clip{suffix}"
    write_container(path, y, codec)
    decoded = load_audio(path)
    assert abs(len(decoded) - len(y)) <= 1024  # AAC pads its last frame
    middle = slice(2048, len(y) - 2048)
    rms_error = np.sqrt(np.mean((decoded[middle] - y[middle]) ** 2))
    assert rms_error < tolerance


def test_bad_files_raise_data_error_naming_them(tmp_path: Path) -> None:
    for name in ("broken.wav", "broken.mp4"):
        (tmp_path / name).write_bytes(b"not audio at all" * 20)
        with pytest.raises(DataError, match=name):
            load_audio(tmp_path / name)
    with pytest.raises(DataError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    with pytest.raises(DataError, match="empty audio"):
        load_audio(tmp_path / "empty.wav")


def test_video_without_audio_stream_is_a_data_error(tmp_path: Path) -> None:
    import cv2

    path = tmp_path / "silent_film.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (32, 32))
    for _ in range(4):
        writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    with pytest.raises(DataError, match="no audio stream"):
        load_audio(path)


def test_tone_peaks_in_its_mel_bin() -> None:
    features = audio_features(sine(1000, 0.5), RATE, kind="logmel", n_mels=64)
    assert features.shape == (1 + 8000 // 160, 64) and features.dtype == np.float32
    centres = librosa.mel_frequencies(n_mels=64 + 2, fmax=RATE / 2)[1:-1]
    assert abs(int(features.mean(axis=0).argmax()) - int(np.abs(centres - 1000).argmin())) <= 1
    # absolute decibels: halving the amplitude lowers every bin above the -100 dB floor by 6 dB
    quieter = audio_features(sine(1000, 0.5, amplitude=0.25), RATE)
    above_floor = quieter > -90
    assert above_floor.sum() > 100
    np.testing.assert_allclose((features - quieter)[above_floor], 20 * np.log10(2), atol=0.05)


def test_feature_kinds_stack_logmel_and_mfcc() -> None:
    y = sine(300, 0.3)
    logmel = audio_features(y, RATE, "logmel", n_mels=40)
    mfcc = audio_features(y, RATE, "mfcc", n_mels=40, n_mfcc=13)
    both = audio_features(y, RATE, "logmel+mfcc", n_mels=40, n_mfcc=13)
    np.testing.assert_array_equal(both, np.concatenate([logmel, mfcc], axis=1))
    widths = {"logmel": 40, "mfcc": 13, "logmel+mfcc": 53}
    assert set(widths) == set(AUDIO_KINDS)
    for kind, width in widths.items():
        assert audio_features(y, RATE, kind, n_mels=40, n_mfcc=13).shape[1] == width
    with pytest.raises(ConfigError, match="unknown audio feature kind"):
        audio_features(y, RATE, "spectrogram")
    with pytest.raises(ConfigError, match="n_mfcc"):
        audio_features(y, RATE, "mfcc", n_mels=10, n_mfcc=20)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("rate", [RATE, 22050])  # as stored, and through the resampler
def test_nan_or_inf_samples_are_a_data_error_naming_the_file(
    tmp_path: Path, bad: float, rate: int
) -> None:
    y = sine(440, 0.5, rate)
    y[100] = bad
    path = tmp_path / "float.wav"
    soundfile.write(path, y, rate, subtype="FLOAT")
    with pytest.raises(DataError) as err:
        load_audio(path, sample_rate=RATE)
    assert str(err.value) == f"{path}: audio holds NaN or infinite samples"


def test_infinite_window_is_refused(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "tone.wav", sine(440, 0.5), RATE)
    with pytest.raises(DataError, match=r"tone.wav: bad time window \(0.0, inf\)"):
        load_audio(tmp_path / "tone.wav", window=(0.0, np.inf))


def test_reading_stops_after_the_kept_seconds_with_the_same_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(8000 * 6)).astype(np.float32)
    soundfile.write(tmp_path / "noise.wav", y, 8000, subtype="FLOAT")
    whole = librosa.resample(y, orig_sr=8000, target_sr=RATE)
    np.testing.assert_array_equal(
        load_audio(tmp_path / "noise.wav", max_seconds=1.5), whole[: int(1.5 * RATE)]
    )
    windowed = librosa.resample(y[8000 : 4 * 8000], orig_sr=8000, target_sr=RATE)
    np.testing.assert_array_equal(
        load_audio(tmp_path / "noise.wav", window=(1.0, 4.0), max_seconds=1.5),
        windowed[: int(1.5 * RATE)],
    )
    write_container(tmp_path / "noise.mov", y, "pcm_s16le", rate=8000)
    np.testing.assert_array_equal(
        load_audio(tmp_path / "noise.mov", max_seconds=1.5),
        load_audio(tmp_path / "noise.mov")[: int(1.5 * RATE)],
    )


def test_a_long_compressed_clip_costs_memory_only_for_what_is_kept(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "silence.flac"  # 20 minutes of silence: about 0.3 MB of FLAC
    soundfile.write(path, np.zeros(20 * 60 * 8000, np.int16), 8000)
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        y = load_audio(path, max_seconds=1.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(y) == RATE
    assert peak < 2_000_000  # decoding all of it would take 38 MB as float32
