"""AVE, the Audio-Visual Event dataset (Tian et al., ECCV 2018): 28 event classes.

Expected under ``--root`` (the extracted ``AVE_Dataset`` folder)::

    Annotations.txt                      Category&VideoID&Quality&StartTime&EndTime
                                         (may start with that header line)
    trainSet.txt, valSet.txt, testSet.txt  the same format, no header (3,339/402/402)
    AVE/<VideoID>.mp4                    10 s videos with their audio track

Names contain commas, fields are separated by ``&``. ``Sample.audio`` and
``Sample.video`` both point at the .mp4. Two readings (``options.ave_reading``):

``"event"`` (the default, clcr's own): each sample is one annotated event,
``Sample.window = (StartTime, EndTime)`` in seconds, to which the extract stage cuts
audio and video. Class names are the categories of ``Annotations.txt`` in order of
first appearance (the order of the original release: Church bell 0, Male speech 1,
Bark 2, ...). An exact repeat of an earlier line (any split) is skipped with a reason.
A video with several distinct events gets one sample per event, with id
``<VideoID>_<start>_<end>``; a video with one event keeps the id ``<VideoID>``.

``"video"`` (the peers' reading, PMR's and ARL's ``dataset/AVEDataset.py``, see
docs/protocols.md): each sample is one whole 10 s video (no window); within a split a
video listed again is skipped with a reason, its **first** listing gives the label (the
official train list names 27 videos twice, some with two categories). Class names are
the categories in order of first appearance in ``testSet.txt`` (the peers' label
order), then any category absent from it in order of first appearance in
``trainSet.txt`` and ``valSet.txt`` (the peers' code would fail on one; the official
lists have none). A video listed in two splits (the official lists share 8 ids between
train and test, 10 between train and val) is a sample of each, as the peers read it:
the first split of train, valid, test keeps the id ``<VideoID>``, a later one gets
``<VideoID>_valid`` or ``<VideoID>_test``.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from clcr_cli.datasets.base import DatasetInfo, DatasetOptions, Sample
from clcr_cli.datasets.layout import (
    LoadedDataset,
    Skipped,
    build_dataset,
    name_few,
    read_lines,
    require_dir,
    require_file,
    require_root,
)
from clcr_cli.errors import ConfigError, DataError

SPLIT_FILES = {"train": "trainSet.txt", "valid": "valSet.txt", "test": "testSet.txt"}
HEADER = "Category&VideoID&Quality&StartTime&EndTime"


class Event(NamedTuple):
    category: str
    video_id: str
    start: float
    end: float


def read_events(path: Path) -> list[Event]:
    """The events of an AVE annotation/split file (header line tolerated)."""
    lines = read_lines(require_file(path, f"an AVE list of lines {HEADER}"))
    if lines and lines[0].lower() == HEADER.lower():
        lines = lines[1:]
    events = []
    for line_no, line in enumerate(lines, 1):
        fields = line.split("&")
        try:
            category, video_id, _quality, start, end = fields
            event = Event(category, video_id, float(start), float(end))
        except ValueError:
            raise DataError(path, f"line {line_no} is not '{HEADER}': {line}") from None
        if not category or not video_id or not 0 <= event.start < event.end < math.inf:
            raise DataError(
                path,
                f"line {line_no} has an empty field or a window that is not 0 <= start < end (finite): {line}",
            )
        events.append(event)
    if not events:
        raise DataError(path, f"no events (expected lines {HEADER})")
    return events


READINGS = ("event", "video")


def load(options: DatasetOptions) -> LoadedDataset:
    """Find the AVE samples under ``options.root`` (see the module docstring)."""
    if options.ave_reading not in READINGS:
        raise ConfigError(f"AVE readings are {' and '.join(READINGS)}, not {options.ave_reading!r}")
    root = require_root(options, "ave")
    if options.ave_reading == "video":
        return load_videos(root)
    return load_events(root)


def check_videos(video_dir: Path, video_ids: list[str]) -> None:
    """A DataError naming the listed videos without their .mp4."""
    missing = sorted({v for v in video_ids if not (video_dir / f"{v}.mp4").is_file()})
    if missing:
        raise DataError(
            video_dir,
            f"{len(missing)} of the listed videos are missing: {name_few(f'{v}.mp4' for v in missing)}",
        )


def info_of(class_names: tuple[str, ...]) -> DatasetInfo:
    return DatasetInfo(
        name="ave",
        target="classification",
        modalities={"audio": "audio", "video": "video"},
        class_names=class_names,
    )


def load_events(root: Path) -> LoadedDataset:
    """clcr's reading: one sample per annotated event, cut to its window."""
    annotations = root / "Annotations.txt"
    class_names = tuple(dict.fromkeys(e.category for e in read_events(annotations)))
    video_dir = require_dir(root / "AVE", "the AVE videos as AVE/<VideoID>.mp4")
    kept: list[tuple[str, Event]] = []
    skipped: list[Skipped] = []
    first_seen: dict[Event, str] = {}
    for split, name in SPLIT_FILES.items():
        for line_no, event in enumerate(read_events(root / name), 1):
            if event in first_seen:
                skipped.append(
                    Skipped(event.video_id, f"{name} line {line_no} repeats {first_seen[event]}")
                )
                continue
            first_seen[event] = f"{name} line {line_no}"
            if event.category not in class_names:
                raise DataError(
                    root / name,
                    f"line {line_no}: category '{event.category}' is not in {annotations.name}",
                )
            kept.append((split, event))
    check_videos(video_dir, [e.video_id for _, e in kept])
    events_per_video = Counter(e.video_id for _, e in kept)
    samples = []
    for split, event in kept:
        path = video_dir / f"{event.video_id}.mp4"
        sample_id = event.video_id
        if events_per_video[event.video_id] > 1:
            sample_id = f"{event.video_id}_{event.start:g}_{event.end:g}"
        samples.append(
            Sample(
                id=sample_id,
                split=split,
                label=float(class_names.index(event.category)),
                audio=path,
                video=path,
                window=(event.start, event.end),
            )
        )
    lists = [annotations, *(root / name for name in SPLIT_FILES.values())]
    return build_dataset(
        info_of(class_names), samples, root, root / SPLIT_FILES["train"], skipped, lists
    )


def load_videos(root: Path) -> LoadedDataset:
    """The peers' reading: one sample per whole video, first listing within a split."""
    listed = {split: read_events(root / name) for split, name in SPLIT_FILES.items()}
    categories = [e.category for split in ("test", "train", "valid") for e in listed[split]]
    class_names = tuple(dict.fromkeys(categories))
    video_dir = require_dir(root / "AVE", "the AVE videos as AVE/<VideoID>.mp4")
    check_videos(video_dir, [e.video_id for events in listed.values() for e in events])
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    split_of_id: dict[str, str] = {}  # video -> the first split that lists it
    for split, name in SPLIT_FILES.items():
        first_line: dict[str, int] = {}
        for line_no, event in enumerate(listed[split], 1):
            if event.video_id in first_line:
                skipped.append(
                    Skipped(
                        event.video_id,
                        f"{name} line {line_no} lists the video again (line "
                        f"{first_line[event.video_id]} gives its label, as the peers keep the first)",
                    )
                )
                continue
            first_line[event.video_id] = line_no
            split_of_id.setdefault(event.video_id, split)
            sample_id = event.video_id
            if split_of_id[event.video_id] != split:
                sample_id = f"{event.video_id}_{split}"
            path = video_dir / f"{event.video_id}.mp4"
            samples.append(
                Sample(
                    id=sample_id,
                    split=split,
                    label=float(class_names.index(event.category)),
                    audio=path,
                    video=path,
                )
            )
    lists = [root / name for name in SPLIT_FILES.values()]
    return build_dataset(
        info_of(class_names), samples, root, root / SPLIT_FILES["train"], skipped, lists
    )
