"""Shared fixtures: one small synth workspace with a trained CLCR run, made once per session
for the tests of the robustness sweeps and of ``clcr predict``.

Also: a second such workspace that no test writes to, copied into one workspace per test
module for the stage tests that fill it (``workdir`` and its run ``trained``); and the
40-sample workspace of the command-line tests (``made``), one copy per test (``ws``).
Helpers that work on workspaces: tests/workspace.py."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from workspace import TRAIN, clcr

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


# --- workspaces the stage tests fill ----------------------------------------------------------


@pytest.fixture(scope="session")
def synth_workspace(tmp_path_factory) -> Path:
    """A workspace as :func:`synth_run` makes it (SYNTH_EXTRACT extracted, CLCR trained with
    SYNTH_QUICK) that no test writes to: each test module that fills a workspace gets its
    own copy (:func:`workdir`)."""
    workdir = tmp_path_factory.mktemp("synth-workspace")
    run_train(train_config({}, {"task": "synth", **SYNTH_QUICK}), extract_config({}, SYNTH_EXTRACT), workdir)
    return workdir


@pytest.fixture(scope="module")
def workdir(synth_workspace: Path, tmp_path_factory) -> Path:
    """This test module's own copy of :func:`synth_workspace`: its tests add evaluations,
    sweeps and runs that no other module sees."""
    return shutil.copytree(synth_workspace, tmp_path_factory.mktemp("stages") / "workdir")


@pytest.fixture(scope="module")
def trained(workdir: Path) -> Path:
    """The CLCR run of :func:`workdir` (found complete there, not trained again)."""
    return run_train(train_config({}, {"task": "synth", **SYNTH_QUICK}), extract_config({}, SYNTH_EXTRACT), workdir)


# --- the workspace of the command-line tests ----------------------------------------------------


@pytest.fixture(scope="session")
def made(tmp_path_factory) -> Path:
    """A workspace with synth (40 samples) extracted, one run trained (1 epoch) and evaluated;
    ``c.toml`` beside it pins the extraction. Tests work on copies (:func:`ws`)."""
    root = tmp_path_factory.mktemp("made")
    (root / "c.toml").write_text('[extract]\ndataset = "synth"\nn_samples = 40\n')
    result = clcr("eval", "--config", root / "c.toml", "--workdir", root / "data", *TRAIN)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def ws(made: Path, tmp_path: Path) -> Path:
    """A copy of the made workspace (root with data/ and c.toml)."""
    return shutil.copytree(made, tmp_path / "ws")
