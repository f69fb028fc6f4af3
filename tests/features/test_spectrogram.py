"""The peers' audio inputs: OGM-GE's log-STFT and the Kaldi fbank of Kinetics-Sounds."""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import pytest

from clcr_cli.features.spectrogram import (
    FLOAT32_EPS,
    KS_FBANK_MEAN,
    KS_FBANK_STD,
    kaldi_fbank,
    kaldi_fbank_raw,
    kaldi_mel_banks,
    kaldi_mel_scale,
    kaldi_window,
    ogm_stft,
    pad_or_cut,
)

FSDD = Path("/work/shared/data/fsdd/recordings")


def chirp_and_noise(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    y = 0.4 * np.sin(2 * np.pi * (100 * t + 1500 * t**2)) + 0.05 * rng.standard_normal(t.size)
    return y.astype(np.float32)


def speech_16k() -> np.ndarray:
    """A real signal at 16 kHz (KS's rate): a few FSDD digits if present, else a chirp."""
    files = sorted(FSDD.glob("*_george_*.wav"))[:4] if FSDD.is_dir() else []
    if not files:
        return chirp_and_noise(1.5, 16_000)
    import soundfile as sf

    clips = []
    for f in files:
        y, sr = sf.read(f, dtype="float32", always_2d=False)
        clips.append(librosa.resample(y, orig_sr=sr, target_sr=16_000))
    return np.concatenate(clips).astype(np.float32)


# ---------------------------------------------------------------- OGM-GE log-STFT


def ogm_formula(y: np.ndarray, sr: int) -> np.ndarray:
    """OGM-GE dataset/CramedDataset.py lines 57-63, written out with librosa."""
    samples = librosa.resample(y, orig_sr=sr, target_sr=22050) if sr != 22050 else y
    resamples = np.tile(samples, 3)[: 22050 * 3]
    resamples[resamples > 1.0] = 1.0
    resamples[resamples < -1.0] = -1.0
    spectrogram = librosa.stft(resamples, n_fft=512, hop_length=353)
    return np.log(np.abs(spectrogram) + 1e-7)


@pytest.mark.parametrize("seconds", [1.7, 4.0])
def test_ogm_stft_is_the_formula_transposed(seconds):
    y = chirp_and_noise(seconds, 22050) * 3.0  # loud: the clipping to [-1, 1] matters
    ours = ogm_stft(y, 22050)
    assert ours.shape == (188, 257) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ogm_formula(y.copy(), 22050).T, atol=1e-5)


def test_ogm_stft_resamples_to_22050():
    y = chirp_and_noise(2.0, 16000)
    ours = ogm_stft(y, 16000)
    assert ours.shape == (188, 257)
    np.testing.assert_allclose(ours, ogm_formula(y.copy(), 16000).T, atol=1e-5)


def test_ogm_stft_tiles_and_cuts():
    y = chirp_and_noise(1.7, 22050)
    tiled = np.tile(y, 3)[: 3 * 22050]
    np.testing.assert_array_equal(ogm_stft(y, 22050), ogm_stft(tiled, 22050))
    long = chirp_and_noise(4.0, 22050)
    np.testing.assert_array_equal(ogm_stft(long, 22050), ogm_stft(long[: 3 * 22050], 22050))


def test_ogm_stft_short_clip_still_fills_3_s():
    y = chirp_and_noise(0.4, 22050)  # np.tile(y, 3) would give 1.2 s
    assert ogm_stft(y, 22050).shape == (188, 257)


def test_ogm_stft_stereo_is_averaged_as_librosa_load_does():
    left, right = chirp_and_noise(2.0, 22050, 1), chirp_and_noise(2.0, 22050, 2)
    np.testing.assert_allclose(
        ogm_stft(np.stack([left, right]), 22050), ogm_stft((left + right) / 2, 22050), atol=1e-5
    )


def test_ogm_stft_reflect_padding_only_changes_the_edge_frames():
    y = chirp_and_noise(3.0, 22050)
    zero, reflect = ogm_stft(y, 22050), ogm_stft(y, 22050, pad_mode="reflect")
    np.testing.assert_array_equal(zero[1:-1], reflect[1:-1])
    assert not np.allclose(zero[0], reflect[0])


# ---------------------------------------------------------------- Kaldi fbank


def test_mel_scale_is_kaldis_formula():
    f = np.array([0.0, 20.0, 700.0, 1000.0, 8000.0])
    np.testing.assert_allclose(kaldi_mel_scale(f), 1127.0 * np.log(1.0 + f / 700.0))
    assert kaldi_mel_scale(700.0) == pytest.approx(1127.0 * math.log(2.0))


def test_mel_bank_edges_follow_the_formula():
    sr, n_fft, bins = 16000, 512, 128
    banks = kaldi_mel_banks(bins, n_fft, sr)
    assert banks.shape == (bins, n_fft // 2 + 1)
    assert not banks[:, -1].any()  # the Nyquist bin gets no weight
    lo, hi = 1127 * math.log(1 + 20 / 700), 1127 * math.log(1 + 8000 / 700)
    delta = (hi - lo) / (bins + 1)
    mel = 1127 * np.log(1 + np.arange(n_fft // 2) * (sr / n_fft) / 700)
    for m in (0, 3, 40, 127):
        left, center, right = lo + m * delta, lo + (m + 1) * delta, lo + (m + 2) * delta
        expected = np.where(
            mel <= center, (mel - left) / (center - left), (right - mel) / (right - center)
        ).clip(0)
        np.testing.assert_allclose(banks[m, :-1], expected, atol=1e-12)
        support = np.flatnonzero(banks[m])
        if support.size:
            assert mel[support].min() > left and mel[support].max() < right
    # at 16 kHz, 128 bins and a 512-point FFT, bin 3 is narrower than an FFT bin: it is
    # empty, as in torchaudio (Kaldi itself refuses), so it is log(eps) in every frame
    assert np.flatnonzero(banks.sum(axis=1) == 0).tolist() == [3]


def test_windows():
    n = np.arange(400)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / 399)
    np.testing.assert_allclose(kaldi_window("hanning", 400), hann)
    np.testing.assert_allclose(kaldi_window("povey", 400), hann**0.85)
    with pytest.raises(ValueError, match="unknown window"):
        kaldi_window("kaiser", 400)


def knf_fbank(y: np.ndarray, sr: int, window: str, bins: int, frame_ms: float) -> np.ndarray:
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sr
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.frame_opts.frame_length_ms = frame_ms
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    opts.use_energy = False
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(sr, y.tolist())
    fbank.input_finished()
    return np.array([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


# kaldi-native-fbank refuses a bank with an empty bin, so the peers' own 128 bins at 25 ms
# and 16 kHz cannot be compared with it: 128 bins are checked with 50 ms frames instead
@pytest.mark.parametrize(
    ("window", "bins", "frame_ms"),
    [("hanning", 80, 25.0), ("povey", 80, 25.0), ("hanning", 128, 50.0), ("hamming", 40, 25.0)],
)
def test_fbank_matches_kaldi_native_fbank(window, bins, frame_ms):
    y = speech_16k()
    reference = knf_fbank(y, 16000, window, bins, frame_ms)
    ours = kaldi_fbank_raw(
        y, 16000, num_mel_bins=bins, frame_length_ms=frame_ms, window_type=window
    )
    assert ours.shape == reference.shape and ours.dtype == np.float32
    assert len(ours) == 1 + (len(y) - int(16000 * frame_ms * 0.001)) // 160  # snip_edges
    np.testing.assert_allclose(ours, reference, atol=1e-3)


def test_fbank_mel_banks_match_kaldi_native_fbank():
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.frame_length_ms = 50.0
    opts.mel_opts.num_bins = 128
    reference = np.array(knf.MelBanks(opts.mel_opts, opts.frame_opts, 1.0).get_matrix())
    ours = kaldi_mel_banks(128, 1024, 16000)
    np.testing.assert_allclose(ours[:, : reference.shape[1]], reference, atol=1e-4)


def test_fbank_log_floor_and_no_scaling():
    silence = np.zeros(16000, dtype=np.float32)
    raw = kaldi_fbank_raw(silence, 16000)
    np.testing.assert_allclose(raw, np.log(FLOAT32_EPS))
    y = speech_16k()
    # the waveform is used as given: x 32768 adds log(32768^2) to every (non-floored) bin
    loud = kaldi_fbank_raw(y * 32768, 16000, num_mel_bins=80)
    quiet = kaldi_fbank_raw(y, 16000, num_mel_bins=80)
    ok = quiet > np.log(FLOAT32_EPS) + 1
    np.testing.assert_allclose((loud - quiet)[ok], 2 * np.log(32768), atol=1e-3)


def test_kaldi_fbank_pads_then_normalises_as_the_peers():
    y = speech_16k()
    raw = kaldi_fbank_raw(y - y.mean(), 16000)
    out = kaldi_fbank(y, 16000)
    assert out.shape == (1024, 128) and out.dtype == np.float32
    n = len(raw)
    assert n < 1024
    np.testing.assert_allclose(out[:n], (raw - KS_FBANK_MEAN) / (2 * KS_FBANK_STD), atol=1e-5)
    np.testing.assert_allclose(out[n:], -KS_FBANK_MEAN / (2 * KS_FBANK_STD), atol=1e-6)


def test_kaldi_fbank_cuts_a_long_clip():
    y = chirp_and_noise(11.0, 16000)  # 1098 frames
    out = kaldi_fbank(y, 16000)
    assert out.shape == (1024, 128)
    raw = kaldi_fbank_raw(y - y.mean(), 16000)
    np.testing.assert_allclose(out, (raw[:1024] - KS_FBANK_MEAN) / (2 * KS_FBANK_STD), atol=1e-5)


def test_kaldi_fbank_stereo_uses_channel_0():
    left, right = chirp_and_noise(1.0, 16000, 1), chirp_and_noise(1.0, 16000, 2)
    np.testing.assert_allclose(
        kaldi_fbank(np.stack([left, right]), 16000), kaldi_fbank(left, 16000), atol=1e-5
    )


def test_kaldi_fbank_refuses_a_clip_shorter_than_a_frame():
    with pytest.raises(ValueError, match="shorter than one 25 ms frame"):
        kaldi_fbank(np.zeros(399, dtype=np.float32), 16000)


def test_pad_or_cut():
    x = np.ones((3, 2), dtype=np.float32)
    assert pad_or_cut(x, 5).tolist() == [[1, 1]] * 3 + [[0, 0]] * 2
    assert pad_or_cut(x, 2).shape == (2, 2)


def test_ave_spectrogram_is_arls_formula_time_major_and_standardised():
    import scipy.signal

    from clcr_cli.features.spectrogram import ave_spectrogram

    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(22_050 * 3)).astype(np.float32)  # 3 s at 22,050 Hz: tiled 10 times
    got = ave_spectrogram(y, 22_050)
    _, _, s = scipy.signal.spectrogram(np.tile(y, 10)[:160_000], 22_050, nperseg=512, noverlap=353)
    log = np.log(s + 1e-7)
    expected = ((log - log.mean()) / log.std()).T
    assert got.shape == (1004, 257) == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert abs(float(got.mean())) < 1e-4 and abs(float(got.std()) - 1) < 1e-3
