"""Noise on a sample's media before extraction: ``clcr noise --level raw``.

Each medium has its own noise, in the units of the signal:

- **audio**: white Gaussian noise at a signal-to-noise ratio, ``y + sqrt(P / 10^(SNR/10)) z``
  with ``P = mean(y^2)`` the power of the clip as extracted (decoded, resampled, cut to
  ``max_seconds``) and ``z ~ N(0, 1)`` per audio sample; a silent clip stays silent;
- **frames**: an optional Gaussian blur (``blur``: its sigma in pixels), then Gaussian pixel
  noise of standard deviation ``pixel_sigma`` in 0-255 intensity units, clipped to 0..255
  and rounded; on each decoded frame at its own resolution, before resizing (as a camera
  would: downsizing averages the noise down);
- **text**: ``char`` replaces each letter, with probability ``text_rate``, by a random
  lowercase letter (a typo; it may draw the same letter); ``word`` deletes each word with
  that probability (a text keeps at least the word whose draw is highest).

Randomness: the draws of one medium of one sample come from a generator seeded by
``(seed, sample id, medium[, frame index])`` (:func:`stable_seed`), not by the level. So a
perturbation is deterministic given (seed, sample, level), video and optical flow read the
same noisy frames, and a higher level applies the same draws, stronger: the noise is
scaled, and the letters or words corrupted at a rate are among those corrupted at any
higher rate. A :class:`RawNoise` with every level at zero changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import asdict, dataclass
from typing import Any, Literal

import cv2
import numpy as np

from clcr_cli.features.video import Perturb

LETTERS = np.array(list(string.ascii_lowercase))


def stable_seed(*parts: Any) -> int:
    """A 64-bit seed made from ``parts`` (numbers, strings, lists): the same in every
    process, run and machine (Python's own ``hash`` of a string is not)."""
    text = json.dumps(parts, separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def sample_rng(*parts: Any) -> np.random.Generator:
    """The generator of one sample's draws, seeded by :func:`stable_seed` of ``parts``."""
    return np.random.default_rng(stable_seed(*parts))


def noisy_audio(y: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``y`` plus white Gaussian noise at ``snr_db`` dB below the clip's mean power."""
    power = float(np.mean(np.square(y, dtype=np.float64)))
    scale = np.sqrt(power / 10 ** (snr_db / 10))
    return (y + scale * rng.standard_normal(y.shape)).astype(np.float32)


def noisy_frame(frame: np.ndarray, pixel_sigma: float, blur: float, rng: np.random.Generator) -> np.ndarray:
    """A uint8 frame blurred (``blur`` > 0: Gaussian, sigma in pixels), then with Gaussian
    noise of std ``pixel_sigma`` (0-255 units) added, clipped and rounded."""
    if blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), sigmaX=blur)
    noisy = frame + pixel_sigma * rng.standard_normal(frame.shape)
    return np.rint(np.clip(noisy, 0, 255)).astype(np.uint8)


def corrupt_text(text: str, rate: float, unit: str, rng: np.random.Generator) -> str:
    """``text`` with a share ``rate`` of its letters replaced (``char``) or of its words
    deleted (``word``); one uniform draw per character or word decides."""
    if unit == "char":
        chars = np.array(list(text))
        draws, letters = rng.random(len(chars)), LETTERS[rng.integers(0, 26, len(chars))]
        hit = (draws < rate) & np.array([c.isalpha() for c in chars], dtype=bool)
        return "".join(np.where(hit, letters, chars))
    words = text.split()
    draws = rng.random(len(words))
    kept = [w for w, u in zip(words, draws, strict=True) if u >= rate]
    return " ".join(kept) if kept else words[int(np.argmax(draws))]


@dataclass(frozen=True)
class RawNoise:
    """The noise put on a sample's media (module docstring); a level of 0 (or None) leaves
    its medium as it is."""

    seed: int = 0
    snr_db: float | None = None  # audio
    pixel_sigma: float = 0.0  # frames
    blur: float = 0.0  # frames
    text_rate: float = 0.0  # text
    text_unit: Literal["char", "word"] = "char"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def audio(self, y: np.ndarray, sample_id: str) -> np.ndarray:
        if self.snr_db is None:
            return y
        return noisy_audio(y, self.snr_db, sample_rng(self.seed, sample_id, "audio"))

    def frames(self, sample_id: str) -> Perturb | None:
        """What to do to decoded frame ``index`` of the sample's video (None: nothing)."""
        if self.pixel_sigma == 0 and self.blur == 0:
            return None

        def perturb(frame: np.ndarray, index: int) -> np.ndarray:
            rng = sample_rng(self.seed, sample_id, "frames", index)
            return noisy_frame(frame, self.pixel_sigma, self.blur, rng)

        return perturb

    def text(self, text: str, sample_id: str) -> str:
        if self.text_rate == 0:
            return text
        return corrupt_text(text, self.text_rate, self.text_unit, sample_rng(self.seed, sample_id, "text"))
