"""UCF101 (Soomro et al., 2012): action recognition, 101 classes, RGB + optical flow.

Expected under ``--root``::

    ucfTrainTestlist/classInd.txt         "<idx> <ClassName>", 1-based
    ucfTrainTestlist/trainlist0{1,2,3}.txt "<Class>/v_<Class>_gXX_cYY.avi <idx>"
    ucfTrainTestlist/testlist0{1,2,3}.txt  "<Class>/v_<Class>_gXX_cYY.avi"
    UCF-101/<Class>/v_<Class>_gXX_cYY.avi  (or <Class>/... directly under the root)

``--fold 1|2|3`` picks the official split (1 by default: 9,537 train / 3,783 test).
Clip paths are matched case-insensitively (the release spells HandstandPushups two ways).

Modalities: ``{"video": "video", "flow": "flow"}``, both from ``Sample.video``: RGB
frames and dense optical flow between them, the two streams of the balanced-multimodal
literature. There is no audio modality: about half of the clips carry no audio track,
and the store needs one modality set for the whole dataset.

Valid: 10 % of the train *groups* (``gXX``: clips cut from one source video), seeded by
``options.seed``, so no source video is in both train and valid.
"""

from __future__ import annotations

import re
from pathlib import Path

from clcr_cli.datasets.base import DatasetInfo, DatasetOptions, Sample
from clcr_cli.datasets.layout import (
    LoadedDataset,
    build_dataset,
    carve_valid,
    files_by_stem,
    name_few,
    read_lines,
    require_dir,
    require_file,
    require_root,
)
from clcr_cli.errors import ConfigError, DataError

CLIP_NAME = re.compile(r"^v_(?P<action>.+)_g(?P<group>\d+)_c(?P<clip>\d+)$", re.IGNORECASE)


def read_class_index(path: Path) -> tuple[str, ...]:
    """Class names in label order from ``classInd.txt`` (1-based "idx Name" lines)."""
    names = []
    for line_no, line in enumerate(read_lines(require_file(path, "UCF101's classInd.txt")), 1):
        fields = line.split()
        if len(fields) != 2 or fields[0] != str(line_no):
            raise DataError(path, f"line {line_no} is not '{line_no} <ClassName>': {line}")
        names.append(fields[1])
    if not names:
        raise DataError(path, "no classes listed")
    return tuple(names)


def group_of(sample: Sample) -> str:
    """The source video a clip was cut from (``<action>_gXX``); clips of one group stay together."""
    match = CLIP_NAME.match(sample.id)
    return f"{match['action'].lower()}_g{match['group']}" if match else sample.id


def load(options: DatasetOptions) -> LoadedDataset:
    """Find the UCF101 clips of official split ``options.fold`` (see the module docstring)."""
    if options.fold not in (1, 2, 3):
        raise ConfigError(f"UCF101 has official splits 1, 2 and 3, not --fold {options.fold}")
    root = require_root(options, "ucf101")
    lists = require_dir(root / "ucfTrainTestlist", "UCF101's split lists (ucfTrainTestlist.zip)")
    class_names = read_class_index(lists / "classInd.txt")
    label_of = {name.lower(): k for k, name in enumerate(class_names)}
    video_dir = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    videos = {
        stem.lower(): path
        for stem, path in files_by_stem(video_dir, (".avi",), recursive=True).items()
    }
    if not videos:
        raise DataError(
            video_dir,
            "no .avi clips (expected UCF-101/<Class>/v_<Class>_gXX_cYY.avi, 13,320 of them)",
        )
    samples, missing = [], []
    for split, list_name in (
        ("train", f"trainlist0{options.fold}.txt"),
        ("test", f"testlist0{options.fold}.txt"),
    ):
        list_path = lists / list_name
        for line_no, line in enumerate(
            read_lines(require_file(list_path, f"UCF101's {list_name}")), 1
        ):
            fields = line.split()
            relpath = fields[0].replace("\\", "/")
            action, _, filename = relpath.rpartition("/")
            if action.lower() not in label_of or not filename.lower().endswith(".avi"):
                raise DataError(
                    list_path,
                    f"line {line_no} does not name <Class>/<clip>.avi of classInd.txt: {line}",
                )
            label = label_of[action.lower()]
            if len(fields) > 1 and fields[1] != str(label + 1):
                raise DataError(
                    list_path,
                    f"line {line_no}: label {fields[1]} is not {action}'s index {label + 1}",
                )
            stem = filename[: -len(".avi")]
            if stem.lower() not in videos:
                missing.append(relpath)
                continue
            path = videos[stem.lower()]
            samples.append(Sample(id=path.stem, split=split, label=float(label), video=path))
    if missing:
        raise DataError(
            video_dir,
            f"{len(missing)} clip(s) named in the split {options.fold} lists are missing: {name_few(missing)}",
        )
    info = DatasetInfo(
        name="ucf101",
        target="classification",
        modalities={"video": "video", "flow": "flow"},
        class_names=class_names,
    )
    train_list = lists / f"trainlist0{options.fold}.txt"
    samples = carve_valid(samples, group_of, options.seed, train_list)
    read = [lists / "classInd.txt", train_list, lists / f"testlist0{options.fold}.txt"]
    return build_dataset(info, samples, root, train_list, [], read)
