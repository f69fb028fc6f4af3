"""AVE, the Audio-Visual Event dataset (Tian et al., ECCV 2018): 28 event classes.

Expected under ``--root`` (the extracted ``AVE_Dataset`` folder)::

    Annotations.txt                      Category&VideoID&Quality&StartTime&EndTime
                                         (may start with that header line)
    trainSet.txt, valSet.txt, testSet.txt  the same format, no header (3,339/402/402)
    AVE/<VideoID>.mp4                    10 s videos with their audio track

Class names are the categories of ``Annotations.txt`` in order of first appearance
(the order of the original release: Church bell 0, Male speech 1, Bark 2, ...); names
contain commas, fields are separated by ``&``. Each sample is one annotated event:
``Sample.window = (StartTime, EndTime)`` in seconds, to which the extract stage cuts
audio and video; ``Sample.audio`` and ``Sample.video`` both point at the .mp4.

Some lines repeat: an exact repeat of an earlier line (any split) is skipped with a
reason. A video with several distinct events gets one sample per event, with id
``<VideoID>_<start>_<end>``; a video with one event keeps the id ``<VideoID>``.
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
from clcr_cli.errors import DataError

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


def load(options: DatasetOptions) -> LoadedDataset:
    """Find the AVE events under ``options.root`` (see the module docstring)."""
    root = require_root(options, "ave")
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
    missing = sorted(
        {e.video_id for _, e in kept if not (video_dir / f"{e.video_id}.mp4").is_file()}
    )
    if missing:
        raise DataError(
            video_dir,
            f"{len(missing)} of the listed videos are missing: {name_few(f'{v}.mp4' for v in missing)}",
        )
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
    info = DatasetInfo(
        name="ave",
        target="classification",
        modalities={"audio": "audio", "video": "video"},
        class_names=class_names,
    )
    lists = [annotations, *(root / name for name in SPLIT_FILES.values())]
    return build_dataset(info, samples, root, root / SPLIT_FILES["train"], skipped, lists)
