"""``synth``: a generated tri-modal dataset whose label lives at three semantic levels.

CLCR's premise is that modalities share semantics at several levels (shallow, mid,
deep) and should exchange evidence level by level. This dataset makes that literal.
Three binary latent factors, each expressed in every modality at its own time scale:

- local  (``thud``/``tick``): the type of brief events -- low 90-160 Hz vs high
  2.5-4 kHz tone bursts of ~40 ms in audio, a dark vs bright one-frame flash of an
  object in video, "thud"-like vs "tick"-like words in text;
- mid    (``slow``/``fast``): the rhythm of those events -- irregular intervals of
  0.3-0.8 s vs a regular 0.25 s beat; in text the run of event words vs a sparse
  sequence broken by pauses;
- global (``falling``/``rising``): the whole clip's trend -- loudness or brightness
  falling vs rising over the 2 s; in text only the *order* of a quiet and a loud
  sentence (the same sentences, so only discourse structure tells); every text fits
  ``TEXT_MAX_TOKENS`` BERT tokens, so truncation never drops the last sentence.

``class = 4 * global + 2 * mid + local`` (8 classes); the regression target is
``1.5 s_global + 1.0 s_mid + 0.5 s_local + N(0, 0.2^2)`` clipped to [-3, 3] with
``s = 2 * factor - 1`` (MOSI's scale). Every modality also has private,
label-independent variation (noise colour and level, carrier pitch; background colour,
texture, object position and colour; names, fillers, synonyms). In
``CORRUPTION_RATE`` of the samples one modality's evidence at one level is replaced by
the opposite factor, so a single modality can be wrong where the others agree.

Files, for ``options.root`` (the stage passes ``<workdir>/raw/synth``)::

    <root>/n<N>-seed<S>-v<V>/generator.json     what and how it was generated
                             transcripts.csv    id, split, label, target, text, factors...
                             audio/<id>.wav     2 s, 16 kHz, PCM-16 mono
                             video/<id>.mp4     16 frames, 8 fps, 32x32, OpenCV mp4v

The folder is written under a temporary name and renamed when complete, so a killed
generation never leaves a half dataset; the generator version is part of the name, so
a changed generator writes a fresh folder. Sample ``i`` depends only on ``(seed, i)``.

``recipe.py`` is the generative process (arrays and text, no files), ``files.py`` writes
its samples to the folder, and this module loads them as a :class:`Dataset`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from clcr_cli.datasets.base import Dataset, DatasetInfo, DatasetOptions, Sample
from clcr_cli.datasets.synth.files import GENERATOR_FILE, TRANSCRIPTS_FILE, ensure_generated
from clcr_cli.datasets.synth.recipe import CLASS_NAMES, MODALITIES
from clcr_cli.errors import ConfigError

INFO = DatasetInfo("synth", "classification", {m: m for m in MODALITIES}, class_names=CLASS_NAMES)
REGRESSION_INFO = DatasetInfo("synth-reg", "regression", {m: m for m in MODALITIES})


def _load(options: DatasetOptions, info: DatasetInfo, label_column: str) -> Dataset:
    if options.root is None:
        raise ConfigError("synth needs a root folder for its generated files")
    folder = ensure_generated(Path(options.root), options.n_samples, options.seed)
    with open(folder / TRANSCRIPTS_FILE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    samples = [
        Sample(
            id=row["id"],
            split=row["split"],
            label=float(row[label_column]),
            text=row["text"],
            audio=folder / "audio" / f"{row['id']}.wav",
            video=folder / "video" / f"{row['id']}.mp4",
        )
        for row in rows
    ]
    return Dataset(info, samples, folder, (folder / GENERATOR_FILE, folder / TRANSCRIPTS_FILE), generated=True)


def load(options: DatasetOptions) -> Dataset:
    """``synth``: 8-way classification, ``class = 4 * global + 2 * mid + local``."""
    return _load(options, INFO, "label")


def load_regression(options: DatasetOptions) -> Dataset:
    """``synth-reg``: the same files, the label is the MOSI-scale regression target."""
    return _load(options, REGRESSION_INFO, "target")
