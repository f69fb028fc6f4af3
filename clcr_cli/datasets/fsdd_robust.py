"""FSDD-robust: speaker-independent audio-visual digits with one modality ruined in many samples.

A fixed robustness benchmark, written as a clcr manifest (``clcr extract --dataset
fsdd-robust --manifest <out_dir>/manifest.csv``). The scheme is fixed before any model is
measured on it and is not to be changed to suit a model; ``docs/fsdd-robust.md`` is its
user-facing description.

Data
----
- Audio: the Free Spoken Digit Dataset (FSDD; Z. Jackson et al.,
  https://github.com/Jakobovski/free-spoken-digit-dataset, versioned on Zenodo;
  CC BY-SA 4.0): mono 8 kHz recordings ``{digit}_{speaker}_{index}.wav``, 50 per digit
  and speaker, 6 speakers, 3,000 recordings.
- Image: scikit-learn's ``load_digits()``, a copy of the test set of the UCI "Optical
  Recognition of Handwritten Digits" data (E. Alpaydin and C. Kaynak, 1998, UCI Machine
  Learning Repository; CC BY 4.0): 1,797 8x8 images, grey levels 0-16, 174-183 per digit. Each is scaled to 0-255
  (``round(v * 255 / 16)``) and upscaled to 32x32 with ``cv2.INTER_NEAREST`` (every pixel
  a 4x4 block: the 32x32 image holds exactly the 8x8 one's information, nothing
  interpolated), written as a grey PNG.

Each recording is paired with one image of the same digit; the label is the digit.

Splits (speaker-independent)
----------------------------
The speakers are those found in the file names, sorted by name. The test speaker is
``test_speaker`` (default: the first by name), the valid speaker the next one by name
after it (wrapping round), the others are train; so ``test_speaker`` rotates a
leave-one-speaker-out protocol. For the 6 speakers of FSDD and the default: test
``george``, valid ``jackson``, train ``lucas``, ``nicolas``, ``theo``, ``yweweler``.
No speaker is in two splits; the manifest's ``group`` column is the speaker.

Per speaker and digit at most :data:`PER_SPEAKER_DIGIT` recordings are used -- test 50
(all), valid 20, train 25 --, the first ones in the order of ``stable_seed(seed, "pick",
id)``. The caps come from the images: one image per sample and none in two samples needs
50 + 20 + 4 x 25 = 170 images of a digit, and the rarest digit (8) has 174. With FSDD
that is 500 test, 200 valid and 1,000 train samples (1,700). Per digit, the images are
taken in the order of a permutation seeded by ``stable_seed(seed, "images", digit)``,
one per manifest row in row order, so no image is in two samples, let alone two splits.

Corruption (every split alike)
------------------------------
Within each (split, digit) stratum of ``n`` samples, sorted by ``stable_seed(seed,
"corruption", id)``, the first ``n - 2 * a`` are clean, the next ``a`` have their audio
ruined and the last ``a`` their image, with ``a = (3 * n + 5) // 10`` (30 %, rounded half
up). With the caps above every stratum has ``n`` a multiple of 10, so the shares are exact
in every split and every digit, and which modality is ruined carries no label information:

============  ======  =====================================================================
corruption    share   what is done (severity ``u`` ~ U(0, 1), per sample)
============  ======  =====================================================================
``none``      40 %    nothing: the original recording, the upscaled image; ``severity`` 0
``audio``     30 %    additive white Gaussian noise at SNR ``-10 - 10 u`` dB (-20..-10 dB)
``image``     30 %    a black square of side ``28 + round(4 u)`` px (88-100 % of the side,
                      77-100 % of the area; it always covers the central 24x24) at a
                      uniform position inside the 32x32 image, then Gaussian pixel noise of
                      std ``96 + 64 u`` (0-255 units), clipped to 0..255 and rounded
============  ======  =====================================================================

The audio noise is :func:`clcr_cli.features.perturb.noisy_audio`, the definition of
``clcr noise --level raw``: ``y + sqrt(P / 10^(SNR/10)) z``, ``P = mean(y^2)`` over the
whole recording at its native 8 kHz, ``z ~ N(0, 1)``; the pixel noise is
:func:`~clcr_cli.features.perturb.noisy_frame`. The noisy recording is written as 32-bit
float WAV at 8 kHz (``audio/<id>.wav``, by ``scipy.io.wavfile``, whose files hold no
time of writing: no clipping, so ``noisy - clean`` is the noise exactly); a clean sample's ``audio`` is the original recording's absolute path. Every
image is written (``images/<id>.png``).

Why these kinds and ranges: the kinds are the standard unimodal corruptions of robustness
benchmarks (MultiBench's: white noise on audio, occlusion and Gaussian noise on images),
applied to one modality of a sample while the other is untouched. The ranges make them a
ruin, not a degradation -- the ruined modality is to carry little label information -- and
were fixed before any clcr model ran on the task, with model-agnostic probes trained and
tested at one corruption level: an RBF SVM on time-normalised log-mel (train speakers ->
the test speaker) kept all its clean accuracy at 0 and -5 dB (so a 0..-10 dB range would
only degrade), and about 60 %, 30 % and 13 % of its above-chance accuracy at -10, -15 and
-20 dB; an RBF SVM on the pixels (99.5 % on clean images) kept about 35 %, 17 % and 0 % of
it at severity 0, 0.5 and 1. These are properties of the data, not results of a model.

``severity`` is ``u`` rounded to 4 decimals, and the SNR, side and std are computed from
the rounded value, so the manifest states them exactly. Randomness: ``u`` from
``sample_rng(seed, id, "severity")``, the audio noise from ``sample_rng(seed, id,
"audio")``, the square (its top row, then its left column) and then the pixel noise from
``sample_rng(seed, id, "image")`` (:func:`~clcr_cli.features.perturb.stable_seed`): a sample's ruin depends on (seed, id)
alone, and the same arguments write byte-identical manifests and media.

Manifest columns: id (the recording's stem), split, label, audio, image, group (the
speaker), corruption (none | audio | image), severity, and ``source_image`` (the index in
``load_digits()``; provenance, ignored by the loader). :func:`corruptions` reads the
corruption of each id back, to break results down by subset.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np

from clcr_cli.datasets.fsdd_digits import RECORDING
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.features.perturb import noisy_audio, noisy_frame, sample_rng, stable_seed

SPLIT_ORDER = ("train", "valid", "test")
PER_SPEAKER_DIGIT = {"train": 25, "valid": 20, "test": 50}  # at most, per speaker and digit
CORRUPTIONS = ("none", "audio", "image")
RUINED_SHARE_TENTHS = 3  # audio and image each: 30 % of a stratum (rounded half up)
SNR_DB = (-10.0, -20.0)  # SNR at severity 0 and 1 (linear in between)
IMAGE_SIZE = 32
OCCLUDER_PX = (28, 32)  # side of the black square at severity 0 and 1 (rounded)
PIXEL_SIGMA = (96.0, 160.0)  # std of the pixel noise at severity 0 and 1, 0-255 units
SEVERITY_DECIMALS = 4
COLUMNS = ("id", "split", "label", "audio", "image", "group", "corruption", "severity", "source_image")


def snr_db(severity: float) -> float:
    """The SNR (dB) of a ruined recording of this severity."""
    return SNR_DB[0] + (SNR_DB[1] - SNR_DB[0]) * severity


def occluder_side(severity: float) -> int:
    return int(round(OCCLUDER_PX[0] + (OCCLUDER_PX[1] - OCCLUDER_PX[0]) * severity))


def pixel_sigma(severity: float) -> float:
    return PIXEL_SIGMA[0] + (PIXEL_SIGMA[1] - PIXEL_SIGMA[0]) * severity


def upscale(image: np.ndarray) -> np.ndarray:
    """A ``load_digits`` image (8x8, 0..16) as 32x32 uint8 0..255, nearest neighbour."""
    grey = np.round(image * (255 / 16)).astype(np.uint8)
    return cv2.resize(grey, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_NEAREST)


def occlude(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``image`` with a black ``side`` x ``side`` square at a uniform position
    inside it (its top row, then its left column, drawn from ``rng``)."""
    top = int(rng.integers(0, image.shape[0] - side + 1))
    left = int(rng.integers(0, image.shape[1] - side + 1))
    occluded = image.copy()
    occluded[top : top + side, left : left + side] = 0
    return occluded


def ruin_image(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` (uint8, 32x32) occluded by a square of :func:`occluder_side` px, then with
    Gaussian noise of std :func:`pixel_sigma` added, clipped and rounded (same ``rng``)."""
    occluded = occlude(image, occluder_side(severity), rng)
    return noisy_frame(occluded, pixel_sigma(severity), 0.0, rng)


def ruin_audio(y: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """``y`` (float, mono) plus white Gaussian noise at :func:`snr_db` dB."""
    return noisy_audio(y, snr_db(severity), rng)


def speakers_of(recordings: list[Path]) -> list[str]:
    return sorted({RECORDING.match(p.stem)["speaker"] for p in recordings})


def split_speakers(speakers: list[str], test_speaker: str | None) -> dict[str, str]:
    """speaker -> split: the test speaker, the next one by name for valid, the rest train."""
    if len(speakers) < 3:
        raise ConfigError(
            f"fsdd-robust needs at least 3 speakers (test, valid, train), found {len(speakers)}: "
            f"{', '.join(speakers) or 'none'}"
        )
    test = speakers[0] if test_speaker is None else test_speaker
    if test not in speakers:
        raise ConfigError(f"test_speaker '{test}' is not one of {', '.join(speakers)}")
    valid = speakers[(speakers.index(test) + 1) % len(speakers)]
    return {s: "test" if s == test else "valid" if s == valid else "train" for s in speakers}


def quota(n: int) -> dict[str, int]:
    """How many of a stratum of ``n`` samples get each corruption."""
    ruined = (RUINED_SHARE_TENTHS * n + 5) // 10
    return {"none": n - 2 * ruined, "audio": ruined, "image": ruined}


def sort_key(stem: str) -> tuple[int, str, int]:
    match = RECORDING.match(stem)
    return int(match["digit"]), match["speaker"], int(match["index"])


def write_unless_same(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` unless the file already holds exactly it: writing the
    task again leaves its files, and so their modification times, as they were, and the
    extraction made from them stays valid (media are identified by size and time,
    clcr_cli/datasets/fingerprint.py)."""
    if not (path.is_file() and path.stat().st_size == len(content) and path.read_bytes() == content):
        path.write_bytes(content)


def write_fsdd_robust_manifest(
    fsdd_root: Path, out_dir: Path, seed: int = 0, test_speaker: str | None = None
) -> Path:
    """Write ``out_dir/manifest.csv``, ``out_dir/images/*.png`` and ``out_dir/audio/*.wav``
    (the ruined recordings) as the module docstring describes; return the manifest path."""
    import scipy.io.wavfile
    import soundfile
    from sklearn.datasets import load_digits

    fsdd_root, out_dir = Path(fsdd_root), Path(out_dir)
    folder = fsdd_root / "recordings"
    if not folder.is_dir():
        raise DataError(
            folder, "missing folder: expected FSDD recordings {digit}_{speaker}_{index}.wav"
        )
    recordings = [p for p in sorted(folder.glob("*.wav")) if RECORDING.match(p.stem)]
    split_of = split_speakers(speakers_of(recordings), test_speaker)

    # per (speaker, digit): the first recordings in the seeded order, up to the split's cap
    pools: dict[tuple[str, int], list[Path]] = {}
    for path in recordings:
        match = RECORDING.match(path.stem)
        pools.setdefault((match["speaker"], int(match["digit"])), []).append(path)
    chosen: dict[str, list[Path]] = {split: [] for split in SPLIT_ORDER}
    for (speaker, _digit), pool in pools.items():
        split = split_of[speaker]
        ranked = sorted(pool, key=lambda p: stable_seed(seed, "pick", p.stem))
        chosen[split] += ranked[: PER_SPEAKER_DIGIT[split]]

    # corruption by quota within each (split, digit) stratum, in the order of (seed, id)
    corruption: dict[str, str] = {}
    for split in SPLIT_ORDER:
        for digit in range(10):
            stratum = sorted(
                (p.stem for p in chosen[split] if sort_key(p.stem)[0] == digit),
                key=lambda stem: stable_seed(seed, "corruption", stem),
            )
            kinds = [k for k, count in quota(len(stratum)).items() for _ in range(count)]
            corruption.update(zip(stratum, kinds, strict=True))

    digits = load_digits()
    rows = [
        (split, p) for split in SPLIT_ORDER for p in sorted(chosen[split], key=lambda p: sort_key(p.stem))
    ]
    need = np.bincount([sort_key(p.stem)[0] for _, p in rows], minlength=10)
    have = np.bincount(digits.target, minlength=10)
    short = [d for d in range(10) if need[d] > have[d]]
    if short:
        d = short[0]
        raise DataError(
            folder, f"{need[d]} recordings of digit {d} chosen but load_digits() has {have[d]} images of it"
        )
    image_order = {
        d: iter(sample_rng(seed, "images", d).permutation(np.flatnonzero(digits.target == d)))
        for d in range(10)
    }

    image_dir, audio_dir = out_dir / "images", out_dir / "audio"
    image_dir.mkdir(parents=True, exist_ok=True)
    audio_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for split, recording in rows:
        stem = recording.stem
        digit, speaker, _ = sort_key(stem)
        source_image = int(next(image_order[digit]))
        kind = corruption[stem]
        severity = 0.0
        if kind != "none":
            severity = round(float(sample_rng(seed, stem, "severity").random()), SEVERITY_DECIMALS)
        image = upscale(digits.images[source_image])
        if kind == "image":
            image = ruin_image(image, severity, sample_rng(seed, stem, "image"))
        image_path = image_dir / f"{stem}.png"
        write_unless_same(image_path, cv2.imencode(".png", image)[1].tobytes())
        audio: Path | str = recording.resolve()
        if kind == "audio":
            y, rate = soundfile.read(str(recording), dtype="float64", always_2d=True)
            noisy = ruin_audio(y.mean(axis=1), severity, sample_rng(seed, stem, "audio"))
            audio_path = audio_dir / f"{stem}.wav"
            # scipy's writer: libsndfile's float WAV has a PEAK chunk holding the time of writing
            wav = io.BytesIO()
            scipy.io.wavfile.write(wav, rate, noisy.astype(np.float32))
            write_unless_same(audio_path, wav.getvalue())
            audio = audio_path.relative_to(out_dir)
        lines.append(
            (
                stem,
                split,
                digit,
                audio,
                image_path.relative_to(out_dir),
                speaker,
                kind,
                f"{severity:.{SEVERITY_DECIMALS}f}",
                source_image,
            )
        )
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(COLUMNS)
    writer.writerows(lines)
    manifest = out_dir / "manifest.csv"
    write_unless_same(manifest, table.getvalue().encode("utf-8"))
    return manifest


def corruptions(manifest: Path) -> dict[str, tuple[str, float]]:
    """id -> (corruption, severity) of an fsdd-robust manifest: for results by subset."""
    with Path(manifest).open(newline="", encoding="utf-8") as f:
        return {row["id"]: (row["corruption"], float(row["severity"])) for row in csv.DictReader(f)}


__all__ = [
    "CORRUPTIONS",
    "PER_SPEAKER_DIGIT",
    "corruptions",
    "occlude",
    "occluder_side",
    "pixel_sigma",
    "ruin_audio",
    "ruin_image",
    "snr_db",
    "upscale",
    "write_fsdd_robust_manifest",
]
