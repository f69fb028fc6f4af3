"""The audio-visual peers' two audio inputs, computed as their data loaders compute them.

Both return TIME-MAJOR float32 arrays ``(frames, frequency bins)``, the layout of our
feature store; the peers feed the transposes ``(F, T)`` (OGM-GE) or the same ``(T, F)``
(Kaldi fbank) as a 1-channel image to a ResNet18.

**OGM-GE's CREMA-D log-STFT** (:func:`ogm_stft`), read from GeWu-Lab/OGM-GE_CVPR2022
``dataset/CramedDataset.py`` lines 57-63 (ARL, shicaiwei123/ICCV2025-ARL
``dataset/CramedDataset.py`` lines 60-66, is the same code)::

    librosa.load(wav, sr=22050)          -> mono float32, resampled to 22,050 Hz
    np.tile(samples, 3)[:22050 * 3]      -> 3 s: the clip repeated, then cut
    clip to [-1, 1]
    np.log(np.abs(librosa.stft(x, n_fft=512, hop_length=353)) + 1e-7)   -> (257, 188)

librosa's STFT defaults apply: Hann window of 512, ``center=True`` (padding 256 samples
each side). Its padding mode is the one version-dependent part: zeros since librosa 0.9
(``pad_mode="constant"``, librosa issue #1382), reflection before. OGM-GE pins no
librosa (its README names PyTorch 1.8.1 / Python 3.7.6, a librosa 0.8 era, when
``pad_mode="reflect"`` and ``librosa.load`` resampled with resampy's ``kaiser_best``);
BalanceBenchmark pins ``librosa==0.10.1`` (``requirements.txt``). We default to today's
zeros and soxr; ``pad_mode="reflect"`` gives the 0.8 behaviour, which changes only the
first and the last of the 188 frames (the only ones reaching into the padding).
One deviation, for clips under 1 s: ``np.tile(x, 3)`` then gives under 3 s and fewer
than 188 frames (OGM-GE's batching would then fail); we repeat the clip as many times as
3 s needs, which is exactly ``np.tile(x, 3)`` for every clip of 1 s or more (all of
CREMA-D's).

**The Kaldi fbank of Kinetics-Sounds** (:func:`kaldi_fbank`), read from OGM-GE
``data/KineticSound/process_audio.py`` lines 30-49, whose ``.npy`` files BalanceBenchmark
(GeWu-Lab/BalanceBenchmark ``balancemm/datasets/KS_dataset.py`` line 58) loads as they
are (BalanceBenchmark's CREMA-D ``.pt`` fbanks, ``cremad_dataset.py`` line 46, and D&R's,
GeWu-Lab/Diagnosing_Relearning_ECCV2024 ``code/dataset/av_dataset.py`` line 82, are
pre-computed the same way outside those repositories)::

    waveform, sr = torchaudio.load(wav)  -> float in [-1, 1]: NOT multiplied by 32768
    waveform = waveform - waveform.mean()
    torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True, sample_frequency=sr,
        use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0,
        frame_shift=10)
    zero-pad (ZeroPad2d) or cut to 1024 frames, THEN (fbank - (-4.503877)) / (5.141276 * 2)

So the window is Kaldi's ``hanning`` (``0.5 - 0.5 cos(2 pi n / (N - 1))``), not Kaldi's
default ``povey`` (that window to the power 0.85), and the normalisation divides by TWICE
the std, as AST does; padded frames become ``(0 - mean) / (2 std)`` = 0.438, not 0. The
rest are torchaudio's (= Kaldi's) defaults: 25 ms frames, pre-emphasis 0.97 applied after
removing each frame's DC offset, ``snip_edges=True`` (only whole frames), FFT zero-padded
to the next power of two, power spectrum, triangular bins on Kaldi's mel scale
``1127 ln(1 + f / 700)`` from 20 Hz to Nyquist (the Nyquist FFT bin gets no weight), natural
log floored at float32 epsilon, no energy column (so ``htk_compat`` changes nothing).
KS wavs are 16 kHz (OGM-GE ``pre-processing/VGG&KS/mp4_to_wav.py``: ``ffmpeg -ar 16000``,
no ``-ac 1``): a 10 s clip gives 998 frames, padded to 1024. For a stereo file
torchaudio's fbank reads channel 0 only (``sig[max(channel, 0)]``), after the mean over
both channels was subtracted; we do the same for a ``(channels, samples)`` array.
torchaudio computes in float32, we in float64: the two agree to float32 rounding. The
global mean subtraction has no effect of its own (each frame's DC offset is removed
anyway) and is kept for fidelity.

**AVE in ARL/OGM-GE** (:func:`ave_spectrogram`): OGM-GE's older
``pre-processing/obtain_audio_spectrogram.py`` (commit a974f3c, lines 13-24) and ARL's
``Audio-1004-SE`` pickles (``dataset/AVEDataset.py`` lines 31, 93, 158) are
``scipy.signal.spectrogram(np.tile(x, 10)[:160000], 22050, nperseg=512, noverlap=353)``
(scipy's default Tukey(0.25) window, density scaling), ``log(S + 1e-7)``, standardised
per clip (mean and std of the whole image): 257 x 1004.
"""

from __future__ import annotations

import math

import librosa
import numpy as np

# OGM-GE CREMA-D (dataset/CramedDataset.py lines 57-63)
OGM_SAMPLE_RATE = 22_050
OGM_SECONDS = 3
OGM_N_FFT = 512
OGM_HOP = 353
OGM_LOG_FLOOR = 1e-7
OGM_FRAMES = 1 + OGM_SAMPLE_RATE * OGM_SECONDS // OGM_HOP  # 188 (center=True)
OGM_BINS = OGM_N_FFT // 2 + 1  # 257

# Kinetics-Sounds Kaldi fbank (OGM-GE data/KineticSound/process_audio.py lines 32-49)
KS_FBANK_MEAN = -4.503877
KS_FBANK_STD = 5.141276
KS_TARGET_FRAMES = 1024
KS_MEL_BINS = 128
FLOAT32_EPS = float(np.finfo(np.float32).eps)  # Kaldi's and torchaudio's log floor
KALDI_WINDOWS = ("hanning", "povey", "hamming", "rectangular", "blackman")


def _mono(y: np.ndarray, how: str) -> np.ndarray:
    """1-D float waveform from ``(samples,)`` or ``(channels, samples)``.

    ``how="mean"`` averages the channels (``librosa.load(mono=True)``); ``how="first"``
    subtracts the mean of all samples then keeps channel 0 (OGM-GE's KS script with
    torchaudio's fbank).
    """
    y = np.asarray(y)
    if y.ndim == 1:
        return y - y.mean() if how == "first" else y
    if y.ndim != 2 or y.shape[0] < 1:
        raise ValueError(
            f"expected a (samples,) or (channels, samples) waveform, got shape {y.shape}"
        )
    if how == "mean":
        return librosa.to_mono(y)
    return (y - y.mean())[0]


def ogm_stft(
    y: np.ndarray,
    sample_rate: int,
    *,
    pad_mode: str = "constant",
    res_type: str = "soxr_hq",
) -> np.ndarray:
    """OGM-GE's CREMA-D log-magnitude STFT, time-major: float32 ``(188, 257)``.

    ``y`` is the waveform as decoded (float in [-1, 1], ``(samples,)`` or
    ``(channels, samples)``, averaged to mono as ``librosa.load`` does) at ``sample_rate``;
    it is resampled to 22,050 Hz when needed. The result is the transpose of OGM-GE's
    ``(257, 188)`` array: row t is frame t (hop 353, frame t centred on sample 353 t).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    x = _mono(np.asarray(y, dtype=np.float32), "mean").astype(np.float32, copy=False)
    if x.size == 0:
        raise ValueError("empty waveform")
    if sample_rate != OGM_SAMPLE_RATE:
        x = librosa.resample(x, orig_sr=sample_rate, target_sr=OGM_SAMPLE_RATE, res_type=res_type)
        x = x.astype(np.float32, copy=False)
    n = OGM_SAMPLE_RATE * OGM_SECONDS
    repeats = max(OGM_SECONDS, math.ceil(n / len(x)))  # = np.tile(x, 3) for any clip of >= 1 s
    x = np.clip(np.tile(x, repeats)[:n], -1.0, 1.0)
    spectrum = librosa.stft(x, n_fft=OGM_N_FFT, hop_length=OGM_HOP, pad_mode=pad_mode)
    return np.log(np.abs(spectrum) + OGM_LOG_FLOOR).T.astype(np.float32)


AVE_SAMPLES = 160_000  # 7.26 s at 22,050 Hz, after tiling the clip 10 times
AVE_OVERLAP = 353


def ave_spectrogram(y: np.ndarray, sample_rate: int, *, res_type: str = "soxr_hq") -> np.ndarray:
    """ARL's / OGM-GE's AVE log spectrogram, time-major and standardised per clip: float32
    ``(1004, 257)`` (module docstring), from the waveform as decoded at ``sample_rate``."""
    import scipy.signal

    x = _mono(np.asarray(y, dtype=np.float32), "mean").astype(np.float32, copy=False)
    if x.size == 0:
        raise ValueError("empty waveform")
    if sample_rate != OGM_SAMPLE_RATE:
        x = librosa.resample(x, orig_sr=sample_rate, target_sr=OGM_SAMPLE_RATE, res_type=res_type)
    x = np.tile(x, max(10, math.ceil(AVE_SAMPLES / len(x))))[:AVE_SAMPLES]
    _, _, spectrum = scipy.signal.spectrogram(x, OGM_SAMPLE_RATE, nperseg=OGM_N_FFT, noverlap=AVE_OVERLAP)
    log = np.log(spectrum + OGM_LOG_FLOOR)
    return ((log - log.mean()) / (log.std() + 1e-9)).T.astype(np.float32)


def kaldi_mel_scale(freq: np.ndarray | float) -> np.ndarray | float:
    """Kaldi's mel scale: ``1127 ln(1 + f / 700)`` (Hz -> mel)."""
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


def kaldi_mel_banks(
    num_bins: int,
    padded_window_size: int,
    sample_rate: float,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> np.ndarray:
    """Kaldi's triangular mel filters, ``(num_bins, padded_window_size // 2 + 1)`` float64.

    Bin m spans the mels ``lo + m d`` (left), ``lo + (m + 1) d`` (centre, weight 1) and
    ``lo + (m + 2) d`` (right), ``d = (hi - lo) / (num_bins + 1)``, lo/hi the mels of
    ``low_freq`` and ``high_freq`` (``<= 0``: offset from Nyquist), linear in mel on each side.
    FFT bin k sits at ``k * sample_rate / padded_window_size`` Hz; the Nyquist bin (the
    last column) has weight 0, as in Kaldi's ``MelBanks`` and torchaudio's ``get_mel_banks``.
    """
    if num_bins < 3:
        raise ValueError(f"need at least 3 mel bins, got {num_bins}")
    if padded_window_size % 2:
        raise ValueError(f"the padded window size must be even, got {padded_window_size}")
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and 0.0 < high_freq <= nyquist and low_freq < high_freq):
        raise ValueError(
            f"bad mel range: low {low_freq} Hz, high {high_freq} Hz, Nyquist {nyquist} Hz"
        )
    mel_low, mel_high = kaldi_mel_scale(low_freq), kaldi_mel_scale(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    m = np.arange(num_bins, dtype=np.float64)[:, None]
    left, center, right = mel_low + m * delta, mel_low + (m + 1) * delta, mel_low + (m + 2) * delta
    num_fft_bins = padded_window_size // 2
    mel = kaldi_mel_scale(np.arange(num_fft_bins) * (sample_rate / padded_window_size))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.concatenate([banks, np.zeros((num_bins, 1))], axis=1)


def kaldi_window(window_type: str, size: int, blackman_coeff: float = 0.42) -> np.ndarray:
    """Kaldi's frame windows (``feature-window.cc``), float64 of ``size`` samples."""
    n = np.arange(size, dtype=np.float64)
    a = 2.0 * math.pi / (size - 1)
    if window_type == "hanning":
        return 0.5 - 0.5 * np.cos(a * n)
    if window_type == "povey":
        return (0.5 - 0.5 * np.cos(a * n)) ** 0.85
    if window_type == "hamming":
        return 0.54 - 0.46 * np.cos(a * n)
    if window_type == "rectangular":
        return np.ones(size)
    if window_type == "blackman":
        return blackman_coeff - 0.5 * np.cos(a * n) + (0.5 - blackman_coeff) * np.cos(2 * a * n)
    raise ValueError(f"unknown window type {window_type!r}; expected one of {KALDI_WINDOWS}")


def kaldi_fbank_raw(
    y: np.ndarray,
    sample_rate: float,
    *,
    num_mel_bins: int = KS_MEL_BINS,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window_type: str = "hanning",
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    round_to_power_of_two: bool = True,
) -> np.ndarray:
    """Kaldi's log mel filterbank (``compute-fbank-feats`` with ``--dither=0``,
    ``--use-energy=false``, ``--snip-edges=true``), float32 ``(frames, num_mel_bins)``.

    ``y`` is a 1-D waveform in the scale given (no rescaling, no global mean removal: see
    :func:`kaldi_fbank` for the peers' whole recipe). Frame t covers samples
    ``[t * shift, t * shift + length)``; only whole frames are kept.
    """
    x = np.asarray(y, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {x.shape}")
    if not 0.0 <= preemphasis <= 1.0:
        raise ValueError(f"pre-emphasis must lie in [0, 1], got {preemphasis}")
    # the sizes as torchaudio and Kaldi take them: truncated, in this order
    shift = int(sample_rate * frame_shift_ms * 0.001)
    length = int(sample_rate * frame_length_ms * 0.001)
    if shift < 1 or length < 2:
        raise ValueError(f"frames of {length} samples every {shift} samples cannot be used")
    if len(x) < length:
        raise ValueError(
            f"a waveform of {len(x)} samples is shorter than one {frame_length_ms:g} ms frame"
            f" ({length} samples at {sample_rate:g} Hz)"
        )
    padded = 1 << (length - 1).bit_length() if round_to_power_of_two else length
    if padded % 2:
        raise ValueError(f"the padded window size must be even, got {padded}")

    n_frames = 1 + (len(x) - length) // shift
    frames = np.lib.stride_tricks.sliding_window_view(x, length)[::shift][:n_frames].copy()
    if remove_dc_offset:
        frames -= frames.mean(axis=1, keepdims=True)
    if preemphasis != 0.0:  # x[j] -= p * x[j - 1], x[0] -= p * x[0]
        previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
        frames = frames - preemphasis * previous
    frames *= kaldi_window(window_type, length)[None, :]
    spectrum = np.fft.rfft(frames, n=padded, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    banks = kaldi_mel_banks(num_mel_bins, padded, sample_rate, low_freq, high_freq)
    energies = power @ banks.T
    return np.log(np.maximum(energies, FLOAT32_EPS)).astype(np.float32)


def pad_or_cut(features: np.ndarray, target_frames: int) -> np.ndarray:
    """``features`` (T, F) with zero rows appended, or cut, to exactly ``target_frames``
    rows (``torch.nn.ZeroPad2d((0, 0, 0, p))`` or ``fbank[:target_length]``)."""
    n = features.shape[0]
    if n >= target_frames:
        return features[:target_frames]
    pad = np.zeros((target_frames - n, *features.shape[1:]), dtype=features.dtype)
    return np.concatenate([features, pad], axis=0)


def kaldi_fbank(
    y: np.ndarray,
    sample_rate: float,
    num_mel_bins: int = KS_MEL_BINS,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    target_frames: int = KS_TARGET_FRAMES,
    mean: float = KS_FBANK_MEAN,
    std: float = KS_FBANK_STD,
    *,
    window_type: str = "hanning",
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    preemphasis: float = 0.97,
) -> np.ndarray:
    """The peers' Kinetics-Sounds audio input: float32 ``(target_frames, num_mel_bins)``.

    ``y``: the waveform as decoded in [-1, 1] (``(samples,)``, or ``(channels, samples)``
    of which channel 0 is used), at ``sample_rate`` (not resampled: OGM-GE passes the
    file's rate). Steps: subtract the waveform's mean, :func:`kaldi_fbank_raw`, zero-pad or
    cut to ``target_frames``, then ``(x - mean) / (2 * std)`` (padding included).
    """
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    x = _mono(np.asarray(y, dtype=np.float64), "first")
    fbank = kaldi_fbank_raw(
        x,
        sample_rate,
        num_mel_bins=num_mel_bins,
        frame_length_ms=frame_length_ms,
        frame_shift_ms=frame_shift_ms,
        window_type=window_type,
        low_freq=low_freq,
        high_freq=high_freq,
        preemphasis=preemphasis,
    )
    fbank = pad_or_cut(fbank, target_frames)
    return ((fbank - np.float32(mean)) / np.float32(std * 2)).astype(np.float32)
