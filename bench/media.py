"""Audio and video extraction: clips/s of clcr's extractors against bare library calls.

Same files (``synth``'s generated .wav and .mp4), same settings (the extract stage's
``synth`` defaults). References:

- audio: ``librosa.load`` then ``librosa.feature.melspectrogram`` and
  ``librosa.power_to_db`` -- the calls clcr's log-mel is made of, without its checks,
  windowing and copies;
- video: one ``cv2.VideoCapture`` per file, ``read()`` of every frame, the evenly spaced
  ones resized and converted to RGB -- clcr opens each file twice (header, then a
  grab/retrieve pass) and checks the true frame count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import Figure, Result, best_of, cost_figures, synth_dataset

BASE_SAMPLES = 64
REPEATS = 5


def _clips_per_second(measured, clips: int, figure: str, reference: str) -> Figure:
    return Figure(
        f"{figure} clips/s",
        clips / measured[figure].seconds,
        f"{reference} clips/s",
        clips / measured[reference].seconds,
        "clips/s",
    )


def run_audio(n_samples: int, workdir: Path, size: str = "small", repeats: int = REPEATS) -> Result:
    import librosa

    from clcr_cli.config import extract_config
    from clcr_cli.features.audio import audio_features, load_audio

    cfg = extract_config({}, {"dataset": "synth"})
    files = [s.audio for s in synth_dataset(workdir, max(n_samples, 10)).samples[:n_samples]]

    def clcr_audio() -> None:
        for path in files:
            y = load_audio(path, cfg.sample_rate, max_seconds=cfg.max_seconds)
            audio_features(y, cfg.sample_rate, cfg.audio_features, cfg.n_mels, cfg.n_mfcc, cfg.hop_length, cfg.n_fft)

    def bare_librosa() -> None:
        for path in files:
            y, sr = librosa.load(path, sr=cfg.sample_rate, duration=cfg.max_seconds)
            mel = librosa.feature.melspectrogram(
                y=y, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels
            )
            librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)

    measured = best_of({"clcr audio": clcr_audio, "bare librosa": bare_librosa}, repeats)
    return Result(
        "audio",
        size,
        {"clips": len(files)},
        [
            _clips_per_second(measured, len(files), "clcr audio", "bare librosa"),
            *cost_figures(measured, "clcr audio", "bare librosa"),
        ],
        {"features": cfg.audio_features, "n_mels": cfg.n_mels, "sample_rate": cfg.sample_rate},
    )


def bare_opencv_frames(path: Path, num_frames: int, size: int) -> np.ndarray:
    """Evenly spaced RGB frames by plain sequential ``VideoCapture.read``."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = set(np.round(np.linspace(0, count - 1, num_frames)).astype(int).tolist())
    frames = []
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            resized = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(resized, cv2.COLOR_BGR2RGB))
        index += 1
    capture.release()
    return np.stack(frames)


def run_video(n_samples: int, workdir: Path, size: str = "small", repeats: int = REPEATS) -> Result:
    from clcr_cli.config import extract_config
    from clcr_cli.features.video import read_frames

    cfg = extract_config({}, {"dataset": "synth"})
    files = [s.video for s in synth_dataset(workdir, max(n_samples, 10)).samples[:n_samples]]

    def clcr_video() -> None:
        for path in files:
            read_frames(path, cfg.num_frames, cfg.frame_size, fps=cfg.fps)

    def bare_opencv() -> None:
        for path in files:
            bare_opencv_frames(path, cfg.num_frames, cfg.frame_size)

    measured = best_of({"clcr video": clcr_video, "bare opencv": bare_opencv}, repeats)
    return Result(
        "video",
        size,
        {"clips": len(files)},
        [
            _clips_per_second(measured, len(files), "clcr video", "bare opencv"),
            *cost_figures(measured, "clcr video", "bare opencv"),
        ],
        {"num_frames": cfg.num_frames, "frame_size": cfg.frame_size},
    )
