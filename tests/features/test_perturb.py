"""The raw-signal perturbations of ``clcr noise --level raw`` (features/perturb.py)."""

from __future__ import annotations

import string
import subprocess
import sys

import numpy as np
import pytest

from clcr_cli.features.perturb import (
    RawNoise,
    corrupt_text,
    noisy_audio,
    noisy_frame,
    sample_rng,
    stable_seed,
)

TEXT = ("Well, Ada heard a thud, then a knock, then a boom; the room went quiet and "
        "the rain kept tapping on the window for a long, long while. ") * 20


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


@pytest.mark.parametrize("snr", [30.0, 10.0, 0.0, -5.0])
def test_audio_noise_reaches_the_snr_asked(snr: float):
    t = np.arange(32000) / 16000
    y = (0.3 * np.sin(2 * np.pi * 440 * t) * np.linspace(0.2, 1, t.size)).astype(np.float32)
    out = noisy_audio(y, snr, sample_rng(0, "a", "audio"))
    assert out.dtype == np.float32 and out.shape == y.shape
    assert _snr_db(y, out) == pytest.approx(snr, abs=0.1)


def test_silent_audio_stays_silent():
    y = np.zeros(1000, dtype=np.float32)
    assert np.array_equal(noisy_audio(y, 0.0, sample_rng(0)), y)


@pytest.mark.parametrize("sigma", [4.0, 16.0, 40.0])
def test_pixel_noise_has_the_std_asked_in_intensity_units(sigma: float):
    frame = np.full((96, 96, 3), 128, dtype=np.uint8)
    out = noisy_frame(frame, sigma, 0.0, sample_rng(1, "v", "frames", 0))
    assert out.dtype == np.uint8 and out.shape == frame.shape
    diff = out.astype(np.float64) - 128
    assert diff.std() == pytest.approx(sigma, rel=0.03)
    assert abs(diff.mean()) < 0.05 * sigma  # unbiased: nothing clipped at 128 +- 3 sigma


def test_pixel_noise_is_clipped_to_the_intensity_range_and_blur_smooths():
    black = np.zeros((32, 32, 3), dtype=np.uint8)
    out = noisy_frame(black, 50.0, 0.0, sample_rng(2))
    assert out.min() == 0 and out.max() <= 255 and (out == 0).mean() > 0.4  # half the draws clip at 0
    checker = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, -1)
    blurred = noisy_frame(checker, 0.0, 2.0, sample_rng(2))
    assert blurred.std() < 0.1 * checker.std()  # a 1-pixel checkerboard blurs to grey
    assert np.array_equal(noisy_frame(checker, 0.0, 0.0, sample_rng(2)), checker)


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_char_corruption_replaces_letters_at_the_rate(rate: float):
    out = corrupt_text(TEXT, rate, "char", sample_rng(3, "t", "text"))
    assert len(out) == len(TEXT)
    letters = np.array([c.isalpha() for c in TEXT])
    changed = np.array([a != b for a, b in zip(TEXT, out, strict=True)])
    assert not changed[~letters].any()  # spaces and punctuation stay
    assert all(c in string.ascii_lowercase for c, hit in zip(out, changed, strict=True) if hit)
    # a replacement draws the same letter 1 time in 26
    assert changed[letters].mean() == pytest.approx(rate * 25 / 26, abs=0.02)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_word_corruption_deletes_words_at_the_rate(rate: float):
    words = TEXT.split()
    out = corrupt_text(TEXT, rate, "word", sample_rng(4, "t", "text")).split()
    assert 1 - len(out) / len(words) == pytest.approx(rate, abs=0.04)
    assert corrupt_text("one two three", 1.0, "word", sample_rng(4)) in {"one", "two", "three"}


def test_corruption_is_nested_across_rates():
    low = corrupt_text(TEXT, 0.1, "char", sample_rng(5, "x", "text"))
    high = corrupt_text(TEXT, 0.3, "char", sample_rng(5, "x", "text"))
    hit_low = {i for i, (a, b) in enumerate(zip(TEXT, low, strict=True)) if a != b}
    assert hit_low and all(high[i] == low[i] for i in hit_low)  # the same letters, the same typos
    kept_high = corrupt_text(TEXT, 0.5, "word", sample_rng(5, "x", "text")).split()
    kept_low = corrupt_text(TEXT, 0.2, "word", sample_rng(5, "x", "text")).split()
    assert len(kept_high) < len(kept_low)
    it = iter(kept_low)
    assert all(w in it for w in kept_high)  # a subsequence: the words kept at 0.5 are kept at 0.2


def test_raw_noise_is_deterministic_per_seed_and_sample():
    y = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    frame = np.full((20, 20, 3), 100, dtype=np.uint8)
    a = RawNoise(seed=1, snr_db=5.0, pixel_sigma=10.0, text_rate=0.2)
    b = RawNoise(seed=1, snr_db=5.0, pixel_sigma=10.0, text_rate=0.2)
    assert np.array_equal(a.audio(y, "s1"), b.audio(y, "s1"))
    assert np.array_equal(a.frames("s1")(frame, 3), b.frames("s1")(frame, 3))
    assert a.text(TEXT, "s1") == b.text(TEXT, "s1")
    other_seed, other_sample = RawNoise(seed=2, snr_db=5.0), RawNoise(seed=1, snr_db=5.0)
    assert not np.array_equal(a.audio(y, "s1"), other_seed.audio(y, "s1"))
    assert not np.array_equal(a.audio(y, "s1"), other_sample.audio(y, "s2"))
    assert not np.array_equal(a.frames("s1")(frame, 3), a.frames("s1")(frame, 4))  # per frame
    # a level changes the scale, not the draws: the noise at 20 dB is that at 10 dB, smaller
    quiet = RawNoise(seed=1, snr_db=20.0).audio(y, "s1") - y
    loud = RawNoise(seed=1, snr_db=10.0).audio(y, "s1") - y
    np.testing.assert_allclose(loud, quiet * np.sqrt(10), rtol=1e-4, atol=1e-5)


def test_raw_noise_at_zero_changes_nothing():
    y = np.ones(100, dtype=np.float32)
    clean = RawNoise(seed=3)
    assert clean.audio(y, "s") is y and clean.frames("s") is None and clean.text(TEXT, "s") == TEXT
    assert RawNoise(seed=3, pixel_sigma=0.0, blur=1.0).frames("s") is not None  # blur alone counts


def test_stable_seed_is_the_same_in_every_process():
    code = "from clcr_cli.features.perturb import stable_seed; print(stable_seed(0, 'synth00001', 'audio'))"
    values = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert values == {str(stable_seed(0, "synth00001", "audio"))}
