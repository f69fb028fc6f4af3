"""CREMA-D (Cao et al., 2014): audio-visual emotion recognition, 6 classes.

Layout of the official release under ``--root``::

    AudioWAV/<Actor>_<Sentence>_<Emotion>_<Level>.wav     e.g. 1001_DFA_ANG_XX.wav
    VideoFlash/<Actor>_<Sentence>_<Emotion>_<Level>.flv   (VP6 video with an MP3 track)

7,442 clips by 91 actors (1001-1091). Label from the clip name with the map of the
audio-visual literature: NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5. Modalities: audio
from the .wav, video from the .flv.

Splits:

- ``--split-file train.csv``: OGM-GE's lists (``train.csv`` and ``test.csv`` beside it;
  rows ``clip,LABEL``, with or without a ``name,label`` header, CRLF or LF). Every
  listed clip must have both files; clips on disk but in neither list are skipped.
  When a ``val.csv`` lies beside the train list, it is the valid split: Diagnosing &
  Re-learning ships ``my_train.csv`` (5,954) + ``val.csv`` (744), a carve of OGM-GE's
  ``train.csv`` (6,698), next to its ``train.csv`` and ``test.csv``. Its clips are taken
  out of the train list, so ``--split-file my_train.csv`` and ``--split-file train.csv``
  of that folder give the same three splits.
- otherwise a fixed, speaker-independent split by actor: the 9 actors whose number is
  a multiple of ten (1010, 1020, ..., 1090) form the test split, about 10 % of the clips.

Without a ``val.csv``, valid is carved from train by actor (``layout.carve_valid``, 10 %
of the train actors, seeded by ``options.seed``), so no speaker is in both train and
valid. Known bad clips are skipped with their reason, as are files without their partner.
"""

from __future__ import annotations

import re
from pathlib import Path

from clcr_cli.datasets.base import DatasetInfo, DatasetOptions, Sample
from clcr_cli.datasets.layout import (
    LoadedDataset,
    Skipped,
    build_dataset,
    carve_valid,
    name_few,
    read_csv_rows,
    require_dir,
    require_file,
    require_root,
)
from clcr_cli.errors import DataError

EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # label index = position
N_CLIPS = 7442
VALID_LIST = "val.csv"  # D&R's valid split, beside its my_train.csv / train.csv and test.csv
CLIP_NAME = re.compile(
    r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$"
)
KNOWN_BAD = {
    "1076_MTI_SAD_XX": "known bad clip: the recording has no audio",
    "1064_TIE_SAD_XX": "known bad clip: the file has no duration",
    "1064_IEO_DIS_MD": "known bad clip: about a minute long (the others last a few seconds)",
}
INFO = DatasetInfo(
    name="cremad",
    target="classification",
    modalities={"audio": "audio", "video": "video"},
    class_names=EMOTIONS,
)


def is_test_actor(actor: int) -> bool:
    """The default speaker-independent test split: actors 1010, 1020, ..., 1090."""
    return actor % 10 == 0


def actor_of(sample: Sample) -> str:
    return sample.id.split("_", 1)[0]


def clip_files(folder: Path, suffix: str) -> dict[str, Path]:
    """Clip name -> file for one of the two media folders; missing/empty is a DataError."""
    pattern = f"{folder.name}/<Actor>_<Sentence>_<Emotion>_<Level>{suffix}"
    require_dir(folder, f"{N_CLIPS:,} CREMA-D clips as {pattern}")
    files = {p.stem: p for p in folder.iterdir() if p.suffix.lower() == suffix and p.is_file()}
    if not files:
        raise DataError(folder, f"no *{suffix} files (expected {N_CLIPS:,} clips as {pattern})")
    return files


def load(options: DatasetOptions) -> LoadedDataset:
    """Find the CREMA-D clips under ``options.root`` (see the module docstring)."""
    root = require_root(options, "cremad")
    wavs = clip_files(root / "AudioWAV", ".wav")
    flvs = clip_files(root / "VideoFlash", ".flv")
    lists: list[Path] = []
    if options.split_file is not None:
        source = Path(options.split_file)
        lists = [source, source.with_name("test.csv")]
        if source.with_name(VALID_LIST) != source and source.with_name(VALID_LIST).is_file():
            lists.append(source.with_name(VALID_LIST))
        samples, skipped = from_split_files(source, wavs, flvs)
    else:
        samples, skipped = by_actor(wavs, flvs)
        source = root
    if not any(s.split == "valid" for s in samples):
        samples = carve_valid(samples, actor_of, options.seed, source)
    return build_dataset(INFO, samples, root, source, skipped, lists)


def clip_problem(clip: str, wavs: dict[str, Path], flvs: dict[str, Path]) -> str | None:
    """Why a clip cannot be used, or None when it can."""
    if clip in KNOWN_BAD:
        return KNOWN_BAD[clip]
    match = CLIP_NAME.match(clip)
    if match is None:
        return "name is not <Actor>_<Sentence>_<Emotion>_<Level>"
    if match["emotion"] not in EMOTIONS:
        return f"unknown emotion '{match['emotion']}'"
    if clip not in wavs:
        return f"no AudioWAV/{clip}.wav"
    if clip not in flvs:
        return f"no VideoFlash/{clip}.flv"
    return None


def make_sample(clip: str, split: str, wavs: dict[str, Path], flvs: dict[str, Path]) -> Sample:
    emotion = clip.split("_")[2]
    return Sample(
        id=clip,
        split=split,
        label=float(EMOTIONS.index(emotion)),
        audio=wavs[clip],
        video=flvs[clip],
    )


def by_actor(wavs: dict[str, Path], flvs: dict[str, Path]) -> tuple[list[Sample], list[Skipped]]:
    samples, skipped = [], []
    for clip in sorted(wavs.keys() | flvs.keys()):
        problem = clip_problem(clip, wavs, flvs)
        if problem is not None:
            skipped.append(Skipped(clip, problem))
            continue
        split = "test" if is_test_actor(int(clip[:4])) else "train"
        samples.append(make_sample(clip, split, wavs, flvs))
    return samples, skipped


def read_split_file(path: Path) -> list[tuple[str, str]]:
    """(clip, LABEL) rows of an OGM-GE split file, with or without a header row."""
    rows = read_csv_rows(require_file(path, "an OGM-GE split file with rows clip,LABEL"))
    if (
        rows
        and CLIP_NAME.match(rows[0][0]) is None
        and rows[0][0].lower() in ("name", "clip", "id", "file")
    ):
        rows = rows[1:]
    parsed = []
    for line_no, row in enumerate(rows, start=1):
        if len(row) < 2 or CLIP_NAME.match(row[0]) is None:
            raise DataError(
                path,
                f"row {line_no} is not 'clip,LABEL' (e.g. 1001_DFA_ANG_XX,ANG): {','.join(row)}",
            )
        clip, label = row[0], row[1].upper()
        if label.isdigit() and int(label) < len(EMOTIONS):
            label = EMOTIONS[int(label)]
        if label != clip.split("_")[2]:
            raise DataError(
                path, f"row {line_no}: label {row[1]} does not match the emotion in {clip}"
            )
        parsed.append((clip, label))
    if not parsed:
        raise DataError(path, "the split file lists no clips")
    return parsed


def from_split_files(
    train_file: Path, wavs: dict[str, Path], flvs: dict[str, Path]
) -> tuple[list[Sample], list[Skipped]]:
    test_file = train_file.with_name("test.csv")
    valid_file = train_file.with_name(VALID_LIST)
    listed = {"train": read_split_file(train_file), "test": read_split_file(test_file)}
    if valid_file != train_file and valid_file.is_file():
        valid = read_split_file(valid_file)
        in_test = sorted({clip for clip, _ in valid} & {clip for clip, _ in listed["test"]})
        if in_test:
            raise DataError(
                valid_file,
                f"{len(in_test)} clip(s) are also in {test_file.name}: {name_few(in_test)}",
            )
        valid_clips = {clip for clip, _ in valid}
        # D&R's val.csv is carved from OGM-GE's train.csv: out of train when listed there too
        listed["train"] = [row for row in listed["train"] if row[0] not in valid_clips]
        if not listed["train"]:
            raise DataError(train_file, f"every listed clip is also in {valid_file.name}")
        listed["valid"] = valid
    samples, skipped, absent = [], [], []
    for split, rows in listed.items():
        for clip, _ in rows:
            problem = clip_problem(clip, wavs, flvs)
            if clip in KNOWN_BAD:
                skipped.append(Skipped(clip, problem))
            elif problem is not None:
                absent.append(f"{clip} ({problem})")
            else:
                samples.append(make_sample(clip, split, wavs, flvs))
    if absent:
        raise DataError(
            train_file, f"{len(absent)} listed clip(s) are not usable on disk: {name_few(absent)}"
        )
    in_lists = {clip for rows in listed.values() for clip, _ in rows}
    unlisted = sorted((wavs.keys() | flvs.keys()) - in_lists)
    names = f"{train_file.name} or {test_file.name}"
    if "valid" in listed:
        names = f"{train_file.name}, {valid_file.name} or {test_file.name}"
    skipped += [Skipped(clip, f"not listed in {names}") for clip in unlisted]
    return samples, skipped
