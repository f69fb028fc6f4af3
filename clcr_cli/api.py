"""A trained run from Python, in three lines::

    import clcr_cli as clcr
    run = clcr.load_run("data/train/synth-<key>")
    prediction = run.predict(["clip07.wav", "clip07.mp4", "clip07.txt"])   # or manifest="new.csv"

``run.model`` is the trained model (eval mode), ``run.config`` its train options (a
``TrainConfig``, the model's among them), ``run.meta`` its model.json (feature statistics,
extract options, the task, the run and extraction keys). ``run.predict`` is ``clcr
predict``: the same extraction with the run's own options, the same cache
(``<run>/predict/<task>-<key>/``), the same numbers. A run folder is complete on its own:
copied or downloaded anywhere, it loads and predicts without the workspace it came from.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from torch import nn

from clcr_cli.config import PredictConfig, TrainConfig, resolve
from clcr_cli.runs import train_manifest
from clcr_cli.stages.predict import Prediction, predict_run
from clcr_cli.training.inference import META_FILE, load_trained


@dataclasses.dataclass(frozen=True)
class Run:
    """A complete train output (:func:`load_run`)."""

    path: Path
    meta: dict[str, Any]

    @cached_property
    def model(self) -> nn.Module:
        return load_trained(self.path, "cpu")[0]

    @property
    def config(self) -> TrainConfig:
        return resolve(TrainConfig, [(f"{self.path / META_FILE}: train_config", self.meta["train_config"])])

    @property
    def task(self) -> str:
        return str(self.meta["train_config"]["task"])

    def predict(
        self,
        files: Sequence[str | Path] = (),
        *,
        manifest: str | Path | None = None,
        missing: Sequence[str] = (),
        out: str | Path | None = None,
        device: str = "auto",
    ) -> Prediction:
        """Predict media ``files`` (grouped into samples by name) or a ``manifest``'s samples,
        ``missing`` modalities absent: ``Prediction.records()`` gives, per sample, the class
        and every probability (or the score)."""
        return predict_run(self.path, PredictConfig(missing=tuple(missing)), files=[Path(f) for f in files],
                           manifest=None if manifest is None else Path(manifest),
                           out=None if out is None else Path(out), device=device)


def load_run(path: str | Path) -> Run:
    """The complete train output at ``path`` (checked as ``clcr predict`` checks it)."""
    path = Path(path).expanduser()
    train_manifest(path)
    return Run(path, json.loads((path / META_FILE).read_text()))
