"""The generative recipe of ``synth``: what sample ``i`` of seed ``s`` is, as arrays and text.

A function of ``(seed, index)`` only (:func:`generate_sample`): the latent factors, the
corruption, the rendered audio, video frames and transcript, and the row of
``transcripts.csv``; :func:`assign_splits` gives the splits. Nothing here touches a file
(``files.py`` writes them, ``__init__.py`` loads them). ``GENERATOR_VERSION`` names the
recipe: change anything that changes what it generates and bump it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

GENERATOR_VERSION = 2
SAMPLE_RATE = 16000
CLIP_SECONDS = 2.0
VIDEO_FPS = 8
FRAME_SIZE = 32
TEXT_SLOTS = 8  # the text's event sentence: one word per 0.25 s
TEXT_MAX_TOKENS = 32  # every text fits a 32-token BERT window ([CLS] and [SEP] included)
CORRUPTION_RATE = 0.25
SPLIT_FRACTIONS = (0.70, 0.15)  # train, valid; test takes the rest

MODALITIES = ("text", "audio", "video")
LEVELS = ("local", "mid", "global")
FACTOR_NAMES = {"local": ("thud", "tick"), "mid": ("slow", "fast"), "global": ("falling", "rising")}
CLASS_NAMES = tuple(
    f"{FACTOR_NAMES['global'][c >> 2]}-{FACTOR_NAMES['mid'][(c >> 1) & 1]}-{FACTOR_NAMES['local'][c & 1]}"
    for c in range(8)
)

_NAMES = ("Maria", "Tom", "Aisha", "Ken", "Lena", "Omar", "Sofia", "Ravi")
_HEDGES = ("", "Well, ", "Oh, ", "So ")
_FILLERS = ("It was late.", "It rained.", "Nobody noticed.", "The door was open.")
_QUIET = ("It was silent.", "All was dim.", "It was barely audible.")
_LOUD = ("It was deafening.", "All was bright.", "It was very loud.")
_EVENT_WORDS = (("thud", "thump", "boom", "knock"), ("tick", "click", "tap", "snap"))
_GAP_WORDS = ("pause", "rest", "gap")
_NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power ~ 1 / f^alpha


@dataclass(frozen=True)
class Latent:
    """What one sample is: factors (0/1 per level) and which modality/level lies."""

    factors: dict[str, int]
    corrupted: tuple[str, str] | None  # (modality, level)

    def view(self, modality: str) -> dict[str, int]:
        """The factors as ``modality`` expresses them (one flipped if it is corrupted)."""
        if self.corrupted is None or self.corrupted[0] != modality:
            return dict(self.factors)
        return {**self.factors, self.corrupted[1]: 1 - self.factors[self.corrupted[1]]}

    @property
    def label(self) -> int:
        return 4 * self.factors["global"] + 2 * self.factors["mid"] + self.factors["local"]


def regression_target(factors: dict[str, int], rng: np.random.Generator) -> float:
    signs = {level: 2 * value - 1 for level, value in factors.items()}
    value = 1.5 * signs["global"] + 1.0 * signs["mid"] + 0.5 * signs["local"] + rng.normal(0, 0.2)
    return float(np.clip(value, -3.0, 3.0))


def draw_latent(rng: np.random.Generator) -> Latent:
    factors = {level: int(rng.integers(2)) for level in LEVELS}
    corrupted = None
    if rng.random() < CORRUPTION_RATE:
        corrupted = (MODALITIES[rng.integers(3)], LEVELS[rng.integers(3)])
    return Latent(factors, corrupted)


def event_times(fast: int, rng: np.random.Generator) -> np.ndarray:
    """Onsets (s) in [0, 2): a regular 0.25 s beat (fast) or irregular 0.3-0.8 s gaps."""
    if fast:
        beat = rng.uniform(0.05, 0.2) + 0.25 * np.arange(8)
        return beat + rng.uniform(-0.01, 0.01, size=8)
    times = [rng.uniform(0.05, 0.4)]
    while (onset := times[-1] + rng.uniform(0.3, 0.8)) < CLIP_SECONDS - 0.1:
        times.append(onset)
    return np.array(times)


def trend(rising: int, fraction: np.ndarray, low: float) -> np.ndarray:
    """The global level's shape over the clip (``fraction`` 0..1): ``low`` -> 1 or back."""
    return low + (1.0 - low) * (fraction if rising else 1.0 - fraction)


def coloured_noise(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with power spectrum ~ 1 / f^alpha."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (alpha / 2), n)
    return noise / np.sqrt(np.mean(noise**2))


def render_audio(
    view: dict[str, int], onsets: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """2 s mono: carrier hum and events under the global ramp, plus constant noise."""
    t = np.arange(int(CLIP_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = trend(view["global"], t / CLIP_SECONDS, low=0.15)
    carrier_hz = rng.uniform(300, 900)
    carrier = 0.12 * (np.sin(2 * np.pi * carrier_hz * t) + 0.4 * np.sin(4 * np.pi * carrier_hz * t))
    events = np.zeros_like(t)
    burst_t = np.arange(int(0.04 * SAMPLE_RATE)) / SAMPLE_RATE
    for onset in onsets:
        if view["local"]:  # tick: high, sharp
            burst = np.sin(2 * np.pi * rng.uniform(2500, 4000) * burst_t) * np.exp(-burst_t / 0.008)
        else:  # thud: low, slower decay
            burst = np.sin(2 * np.pi * rng.uniform(90, 160) * burst_t) * np.exp(-burst_t / 0.015)
        start = int(onset * SAMPLE_RATE)
        stop = min(len(t), start + len(burst))
        events[start:stop] += 0.6 * burst[: stop - start]
    colour = str(rng.choice(list(_NOISE_COLOURS)))
    noise_level = rng.uniform(0.01, 0.08)
    noise = noise_level * coloured_noise(len(t), _NOISE_COLOURS[colour], rng)
    y = np.clip(envelope * (carrier + events) + noise, -1.0, 1.0).astype(np.float32)
    return y, {
        "carrier_hz": round(carrier_hz, 1),
        "noise_colour": colour,
        "noise_level": round(noise_level, 4),
    }


def render_video(
    view: dict[str, int], onsets: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """16 RGB frames: textured background and an object, flashing at event frames,
    all under the global brightness ramp, plus per-pixel noise."""
    n_frames = int(CLIP_SECONDS * VIDEO_FPS)
    background = rng.uniform(40, 200, size=3)
    texture = cv2.resize(
        rng.uniform(-1, 1, size=(4, 4)), (FRAME_SIZE, FRAME_SIZE), interpolation=cv2.INTER_CUBIC
    )
    scene = background + rng.uniform(5, 30) * texture[..., None]
    x, y = (int(v) for v in rng.integers(2, FRAME_SIZE - 10, size=2))
    object_rgb = rng.uniform(60, 190, size=3)
    scene[y : y + 8, x : x + 8] = object_rgb
    flash_frames = {int(onset * VIDEO_FPS) for onset in onsets}
    gains = trend(view["global"], np.arange(n_frames) / (n_frames - 1), low=0.35)
    noise_sigma = rng.uniform(2, 12)
    frames = np.empty((n_frames, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    for k in range(n_frames):
        frame = scene.copy()
        if k in flash_frames:
            frame[y : y + 8, x : x + 8] = 255.0 if view["local"] else 0.0
        frame = frame * gains[k] + rng.normal(0, noise_sigma, size=frame.shape)
        frames[k] = np.clip(np.round(frame), 0, 255).astype(np.uint8)
    private = {
        "background_rgb": " ".join(str(int(c)) for c in background),
        "object_x": x,
        "object_y": y,
    }
    return frames, private


def render_text(
    view: dict[str, int], onsets: np.ndarray, rng: np.random.Generator
) -> tuple[str, dict]:
    """A quiet and a loud sentence (their order is the trend) around an event sentence
    with one word per 0.25 s slot, plus a name, a hedge and a filler sentence."""
    name = str(rng.choice(_NAMES))
    event_word = str(rng.choice(_EVENT_WORDS[view["local"]]))
    gap_word = str(rng.choice(_GAP_WORDS))
    filled = {min(TEXT_SLOTS - 1, int(onset / (CLIP_SECONDS / TEXT_SLOTS))) for onset in onsets}
    slots = " ".join(event_word if k in filled else gap_word for k in range(TEXT_SLOTS))
    quiet, loud = str(rng.choice(_QUIET)), str(rng.choice(_LOUD))
    first, last = (quiet, loud) if view["global"] else (loud, quiet)
    sentences = [first, f"{rng.choice(_HEDGES)}{name} heard {slots}.", last]
    sentences.insert(int(rng.integers(4)), str(rng.choice(_FILLERS)))
    return " ".join(sentences), {"name": name}


@dataclass(frozen=True)
class GeneratedSample:
    row: dict[str, object]  # one transcripts.csv row, without its split
    audio: np.ndarray  # (SAMPLE_RATE * CLIP_SECONDS,) float32
    frames: np.ndarray  # (16, 32, 32, 3) uint8 RGB


def generate_sample(seed: int, index: int) -> GeneratedSample:
    """Sample ``index`` of the dataset for ``seed``: a function of (seed, index) only."""
    rng = np.random.default_rng([seed, index])
    latent = draw_latent(rng)
    target = regression_target(latent.factors, rng)
    shared_onsets = event_times(latent.factors["mid"], rng)

    def onsets(view: dict[str, int]) -> np.ndarray:  # a corrupted rhythm gets its own events
        return (
            shared_onsets if view["mid"] == latent.factors["mid"] else event_times(view["mid"], rng)
        )

    views = {modality: latent.view(modality) for modality in MODALITIES}
    audio, audio_private = render_audio(views["audio"], onsets(views["audio"]), rng)
    frames, video_private = render_video(views["video"], onsets(views["video"]), rng)
    text, text_private = render_text(views["text"], onsets(views["text"]), rng)
    modality, level = latent.corrupted or ("", "")
    row = {
        "id": f"synth{index:05d}",
        "label": latent.label,
        "class_name": CLASS_NAMES[latent.label],
        "target": f"{target:.6f}",
        "text": text,
        "corrupted_modality": modality,
        "corrupted_level": level,
        **latent.factors,
        "n_events": len(shared_onsets),
        **audio_private,
        **video_private,
        **text_private,
    }
    return GeneratedSample(row, audio, frames)


def assign_splits(n_samples: int, seed: int) -> list[str]:
    """70/15/15 train/valid/test by a permutation seeded with ``seed``."""
    order = np.random.default_rng(seed).permutation(n_samples)
    n_train = round(SPLIT_FRACTIONS[0] * n_samples)
    n_valid = round(SPLIT_FRACTIONS[1] * n_samples)
    splits = ["test"] * n_samples
    for rank, index in enumerate(order):
        if rank < n_train + n_valid:
            splits[index] = "train" if rank < n_train else "valid"
    return splits
