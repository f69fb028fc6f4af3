"""What every dataset loader returns: a :class:`Dataset` of :class:`Sample` records.

A loader finds samples (id, split, label and where each modality's evidence lives);
it decodes nothing. The extract stage feeds the sources to the shared extractors in
``clcr_cli.features`` and writes the result to the HDF5 feature store.

Modality *sources* (``DatasetInfo.modalities`` maps modality name -> source):

- ``"text"``:  ``Sample.text`` (a string) or ``Sample.text_file`` (a UTF-8 file, read at
  extract time by ``clcr_cli.features.text.read_text_file``, so that a bad file is one
  sample's error), encoded to BERT early/mid/late levels;
- ``"audio"``: ``Sample.audio`` (a .wav or a container with an audio track), log-mel/MFCC;
- ``"video"``: ``Sample.video`` (a video file or a still image), sampled uint8 frames;
- ``"flow"``:  ``Sample.video``, dense optical flow between sampled frames;
- ``"array"``: ``Sample.arrays[modality]``, a precomputed (T, F) feature sequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

SPLITS = ("train", "valid", "test")
Source = Literal["text", "audio", "video", "flow", "array"]
Target = Literal["classification", "regression"]
TARGETS: tuple[str, ...] = get_args(Target)


@dataclass(frozen=True)
class Sample:
    """One example: where its evidence lives, its split and its label."""

    id: str
    split: str  # one of SPLITS
    label: float  # class index (as a number) or regression target
    text: str | None = None
    text_file: Path | None = None  # the text lives in this file (read at extract time)
    audio: Path | None = None
    video: Path | None = None
    # (start, end) in seconds: audio and video are cut to this window (AVE's events)
    window: tuple[float, float] | None = None
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    # what keeps related samples in one split (a speaker, a session, a source video);
    # None: the loader gives none (a manifest's optional ``group`` column)
    group: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    target: Target
    modalities: Mapping[str, Source]
    class_names: tuple[str, ...] = ()  # empty for regression

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Dataset:
    """A loader's result. ``sources`` are the files it read to find the samples (a manifest,
    split or annotation lists, MMSA's label.csv or feature pickle): with the samples and the
    media they name, what the extract stage's key identifies (``datasets.fingerprint``).
    ``generated`` marks data written by a generator from options the key already holds
    (``synth``): its media are identified by path and size, not by modification time."""

    info: DatasetInfo
    samples: list[Sample]
    root: Path
    sources: tuple[Path, ...] = ()
    generated: bool = False


@dataclass(frozen=True)
class DatasetOptions:
    """Everything a loader may need; each loader reads the fields that concern it."""

    root: Path | None = None  # the dataset's folder (default: <workdir>/raw/<name>)
    split_file: Path | None = None  # CREMA-D: an OGM-GE style train.csv (test.csv beside it)
    fold: int = 1  # UCF101: official split 1, 2 or 3
    aligned: bool = False  # MOSI/MOSEI: aligned_50.pkl instead of unaligned_50.pkl
    manifest: Path | None = None  # a user's CSV manifest
    target: Target | None = None  # manifest: classification or regression
    n_samples: int = 240  # synth: how many samples to generate
    seed: int = 0
    # AVE: "event" (one sample per annotated event, cut to its window) or "video" (the
    # peers' reading, PMR's and ARL's: one sample per whole video, first listing kept)
    ave_reading: str = "event"
