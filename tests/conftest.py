"""Shared fixtures: one small synth workspace with a trained CLCR run, made once per session
for the tests of the robustness sweeps and of ``clcr predict``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from clcr_cli.config import ExtractConfig, TrainConfig, extract_config, train_config
from clcr_cli.pipeline import train as run_train

SYNTH_EXTRACT = {"dataset": "synth", "n_samples": 160, "part_size": 40}
SYNTH_QUICK = {"epochs": 12, "batch_size": 16, "lr": 3e-3, "optimizer": "adamw", "d": 32, "num_heads": 2}


@dataclass(frozen=True)
class SynthRun:
    workdir: Path
    run: Path  # the train output
    train: TrainConfig
    extract: ExtractConfig

    def train_args(self, **changes: object) -> list[str]:
        """The command-line options naming this run's training (with ``changes``), for
        ``clcr noise`` or ``clcr eval``."""
        args = ["--task", "synth", "--workdir", str(self.workdir)]
        for k, v in {**SYNTH_QUICK, **changes}.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        return args


@pytest.fixture(scope="session")
def synth_run(tmp_path_factory) -> SynthRun:
    """160 synth samples (24 test), CLCR trained 12 epochs: about 30 s on 2 CPU cores."""
    workdir = tmp_path_factory.mktemp("synth-run")
    extract = extract_config({}, SYNTH_EXTRACT)
    train = train_config({}, {"task": "synth", **SYNTH_QUICK})
    return SynthRun(workdir, run_train(train, extract, workdir), train, extract)
