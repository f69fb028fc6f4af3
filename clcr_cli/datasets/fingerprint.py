"""What the extract stage reads, as one digest: the identity of a dataset's content.

A dataset is identified by what its loader found -- every sample's id, split, label,
inline text and window, the target, modalities and class names, the clips it skipped --
and by the files behind them, each named by its path relative to the dataset root (so a
dataset moved elsewhere, or a workspace copied elsewhere, keeps its identity):

- the loader's sources (a manifest, split and annotation lists, label.csv) and the
  ``.txt`` files a manifest names: by the sha256 of their content, when they are at
  most :data:`HASHED_BYTES` (edits that keep a file's size and time still count);
- media files, and bigger sources (an MMSA feature pickle): by size and modification
  time -- a stat, not a read, cheap for a dataset of any size --, or for generated data
  (``synth``) by size alone: its content follows from options the key already holds;
- with ``verify`` (``extract --verify-inputs``), every file by the sha256 of its
  content: every input is read, and modification times no longer matter (a copy that
  did not preserve them is the same data). This identity differs from the default one,
  so the two name different extractions.

Precomputed arrays (MMSA's) are identified by the source file they were read from.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from clcr_cli.cache import canonical_json, sha256_file
from clcr_cli.datasets import skipped_samples
from clcr_cli.datasets.base import Dataset

HASHED_BYTES = 16 << 20  # sources and transcripts up to this size are identified by content


def fingerprint(dataset: Dataset, verify: bool = False) -> str:
    """The sha256 (hex) of ``dataset``'s content as the module docstring describes."""
    known: dict[tuple[Path, bool], list] = {}

    def identity(path: Path | None, text: bool = False) -> list | None:
        """A file's relative path and identity; ``text``: a source or a transcript."""
        if path is None:
            return None
        if (path, text) not in known:
            size = path.stat().st_size
            if verify or (text and size <= HASHED_BYTES):
                found = ["sha256", sha256_file(path)]
            elif dataset.generated:
                found = ["size", size]
            else:
                found = ["stat", size, path.stat().st_mtime_ns]
            known[(path, text)] = [os.path.relpath(path, dataset.root), *found]
        return known[(path, text)]

    info = dataset.info
    payload = {
        "target": info.target,
        "modalities": dict(info.modalities),
        "class_names": list(info.class_names),
        "sources": [identity(p, text=True) for p in dataset.sources],
        "samples": [
            [s.id, s.split, s.label, s.text, s.window,
             identity(s.text_file, text=True), identity(s.audio), identity(s.video)]
            for s in dataset.samples
        ],
        "skipped": [list(s) for s in skipped_samples(dataset)],
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()
