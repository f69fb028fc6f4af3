"""Kinetics-Sounds (Arandjelovic & Zisserman, 2017) in the OGM-GE lineage: 31 classes.

Expected under ``--root``::

    my_train.txt, my_test.txt     OGM-GE lists (or ``--split-file .../my_train.txt``
                                  with my_test.txt beside it); CRLF or LF lines
                                  ``<id>,10,<label 0-30>``
    **/<id>.mp4                   the 10 s clips (.mp4, .mkv, .webm or .avi), in one flat
                                  folder or in sub-folders (e.g. one per class)

A clip id is the list's first field, whatever its form, and the file is named after it:
OGM-GE's ``my_train.txt`` uses ``<ytid>_<start6>_<end6>`` (the YouTube id, then the
clip's start and end in seconds, zero-padded to 6 digits), its ``my_test.txt``
``<ytid>_<n>`` (a running number: the list gives no times); YouTube ids themselves
contain ``_`` and ``-``, so an id is never split.

Each clip is a video with its audio track: ``Sample.audio`` and ``Sample.video`` both
point at the file and the extract stage decodes both from it.

The clips were scraped from YouTube and every copy misses some (deleted videos), so a
listed clip without a file is skipped with a reason, not an error; a list none of whose
clips is found is a DataError (most likely a wrong ``--root``). Class names: the lists
carry only label numbers; when the clips sit in one sub-folder per class, the folder
names become the class names, otherwise the names are the numbers ("0".."30").
Valid: 10 % of the train clips, seeded by ``options.seed`` (``layout.carve_valid``).
"""

from __future__ import annotations

from pathlib import Path

from clcr_cli.datasets.base import DatasetInfo, DatasetOptions, Sample
from clcr_cli.datasets.layout import (
    LoadedDataset,
    Skipped,
    build_dataset,
    carve_valid,
    files_by_stem,
    read_lines,
    require_file,
    require_root,
)
from clcr_cli.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi")
# OGM-GE's ids: <ytid>_<start6>_<end6> in my_train.txt, <ytid>_<n> in my_test.txt
LIST_FORMAT = "lines <ytid>_<start6>_<end6>,10,<label> or <ytid>_<n>,10,<label>"


def read_list(path: Path) -> list[tuple[str, int]]:
    """(clip id, label) pairs of an OGM-GE Kinetics-Sounds list."""
    pairs = []
    for line_no, line in enumerate(
        read_lines(require_file(path, f"an OGM-GE list of {LIST_FORMAT}")), 1
    ):
        fields = line.split(",")
        if len(fields) != 3 or not fields[0] or not fields[2].isdigit():
            raise DataError(
                path,
                f"line {line_no} is not '<ytid>_<start6>_<end6>,10,<label>' "
                f"(or '<ytid>_<n>,10,<label>'): {line}",
            )
        pairs.append((fields[0], int(fields[2])))
    if not pairs:
        raise DataError(path, f"the list is empty (expected {LIST_FORMAT})")
    return pairs


def class_names(n_classes: int, labelled_files: list[tuple[int, Path]]) -> tuple[str, ...]:
    """Folder names when every class sits in its own sub-folder, else the label numbers."""
    folders: dict[int, set[str]] = {}
    for label, path in labelled_files:
        folders.setdefault(label, set()).add(path.parent.name)
    names = [
        next(iter(folders[k])) if len(folders.get(k, ())) == 1 else None for k in range(n_classes)
    ]
    if None in names or len(set(names)) != n_classes:
        return tuple(str(k) for k in range(n_classes))
    return tuple(names)


def load(options: DatasetOptions) -> LoadedDataset:
    """Find the Kinetics-Sounds clips under ``options.root`` (see the module docstring)."""
    root = require_root(options, "ks")
    train_list = (
        Path(options.split_file) if options.split_file is not None else root / "my_train.txt"
    )
    lists = {"train": train_list, "test": train_list.with_name("my_test.txt")}
    listed = {split: read_list(path) for split, path in lists.items()}
    videos = files_by_stem(root, VIDEO_SUFFIXES, recursive=True)
    samples, skipped, labelled_files = [], [], []
    for split, pairs in listed.items():
        found = [(clip, label) for clip, label in pairs if clip in videos]
        if not found:
            raise DataError(
                root,
                f"none of the {len(pairs)} clips of {lists[split].name} has a video file "
                f"(<id>{'/'.join(VIDEO_SUFFIXES)} in a flat folder or class sub-folders)",
            )
        for clip, label in pairs:
            if clip not in videos:
                skipped.append(
                    Skipped(clip, f"no video file {clip}.mp4/.mkv/.webm/.avi under the root")
                )
                continue
            path = videos[clip]
            samples.append(Sample(id=clip, split=split, label=float(label), audio=path, video=path))
            labelled_files.append((label, path))
    n_classes = 1 + max(label for pairs in listed.values() for _, label in pairs)
    info = DatasetInfo(
        name="ks",
        target="classification",
        modalities={"audio": "audio", "video": "video"},
        class_names=class_names(n_classes, labelled_files),
    )
    samples = carve_valid(samples, lambda s: s.id, options.seed, train_list)
    return build_dataset(info, samples, root, train_list, skipped, lists.values())
