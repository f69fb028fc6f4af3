"""Stage ``perturb``: one modality of one split, extracted again from noisy media.

``clcr noise --level raw`` evaluates a model on media perturbed before extraction
(``features/perturb.py``): the split's samples are found again from the store's recorded
options (``runs.extraction_of``, which checks that they are the same data), their media
perturbed and put through the same extractors with exactly the store's extract options.

Inputs:   a complete extraction (its store and dataset).
Params:   the split, the modality and its :class:`~clcr_cli.features.perturb.RawNoise`
          (level and noise seed).
Outputs:  ``<workdir>/perturb/<dataset>-<key>/``
            features.h5   the split's samples, in the store's order, this modality only
            parts/        resumable part files, removed once the store is complete
Cache:    keyed by the extraction's key and the params, so a level and seed is extracted
          once and reused by every model and every later sweep; a killed run resumes after
          its last whole part. A sample that extracted cleanly but fails when perturbed is
          an error (one line), never skipped: every model is evaluated on the same samples.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console

from clcr_cli.cache import StageDir, StageKey, produce
from clcr_cli.errors import DataError
from clcr_cli.features.featurize import Featurizer, build_store, store_attrs
from clcr_cli.features.perturb import RawNoise
from clcr_cli.runs import STORE_FILE, Extraction
from clcr_cli.runtime import resolve_device
from clcr_cli.store import FeatureStore

PERTURB_VERSION = 1


def run_perturbed(
    source: Extraction,
    split: str,
    modality: str,
    noise: RawNoise,
    workdir: Path,
    *,
    device: str = "auto",
    console: Console | None = None,
) -> Path:
    """Extract (or reuse) ``modality`` of ``split`` of ``source`` with ``noise`` put on its
    media; return the path of that ``features.h5``."""
    console = console or Console(stderr=True)
    with FeatureStore(source.store) as store:
        ids = [str(i) for i in store.ids[store.split_indices(split)]]
        layout = store.modalities[modality]
    by_id = {s.id: s for s in source.dataset.samples}
    absent = [i for i in ids if i not in by_id]
    if absent:
        raise DataError(source.store, f"sample {absent[0]} is no longer in its dataset")
    samples = [by_id[i] for i in ids]
    params = {"split": split, "modality": modality, "noise": noise.as_dict()}
    stage = StageDir(workdir, StageKey("perturb", PERTURB_VERSION, source.cfg.dataset, params, {"extract": source.key}))

    def work() -> dict[str, int]:
        cfg = dataclasses.replace(source.cfg, on_error="fail")
        featurizer = Featurizer({modality: layout.source}, cfg, resolve_device(device), source.dataset.root, noise)
        attrs = store_attrs(featurizer, cfg.dataset, {"perturb": params}, target=source.dataset.info.target,
                            class_names=source.dataset.info.class_names, extract_key=source.key)
        n, _ = build_store(stage.path / STORE_FILE, samples, featurizer, cfg, attrs, console)
        return {"samples": n}

    produce(stage, work, console=console)
    return stage.path / STORE_FILE
