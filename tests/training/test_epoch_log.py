"""What a run records while it trains (issue 21): TensorBoard events equal to history.csv,
train.log, and one plain line per epoch when stderr is not a terminal."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from clcr_cli.training.epoch_log import tensorboard_tag


def test_tags_group_the_history_columns():
    assert tensorboard_tag("train_loss") == "train/loss"
    assert tensorboard_tag("train_intra") == "train/intra"
    assert tensorboard_tag("valid_acc") == "valid/acc"
    assert tensorboard_tag("train_participation_0") == "participation/level_1"
    assert tensorboard_tag("valid_level_weight_2") == "level_weights/level_3"
    assert tensorboard_tag("lr") == "lr" and tensorboard_tag("seconds") == "time/seconds"
    assert tensorboard_tag("samples_per_s") == "time/samples_per_s"


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> tuple[Path, str]:
    """A 2-epoch run trained by the CLI with stderr to a pipe (not a terminal)."""
    workdir = tmp_path_factory.mktemp("logged")
    clcr = [sys.executable, "-m", "clcr_cli"]
    subprocess.run([*clcr, "extract", "--dataset", "synth", "--n-samples", "40", "--workdir", str(workdir)],
                   check=True, capture_output=True)
    done = subprocess.run([*clcr, "train", "--task", "synth", "--epochs", "2", "--d", "16", "--workdir", str(workdir)],
                          check=True, capture_output=True, text=True)
    (run,) = (workdir / "train").iterdir()
    return run, done.stderr


def test_tensorboard_events_hold_every_history_column_of_every_epoch(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = logged_run
    with open(run / "history.csv", newline="") as fh:
        history = list(csv.DictReader(fh))
    assert len(history) == 2 and "valid_level_weight_0" in history[0] and "train_participation_0" in history[0]
    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    columns = [c for c in history[0] if c != "epoch"]
    assert tags == {tensorboard_tag(c) for c in columns}
    for column in columns:
        scalars = events.Scalars(tensorboard_tag(column))
        assert [s.step for s in scalars] == [1, 2], column
        for scalar, row in zip(scalars, history, strict=True):
            assert scalar.value == pytest.approx(float(row[column]), rel=1e-6, abs=1e-7), column


def test_stderr_that_is_no_terminal_gets_one_line_per_epoch_and_train_log_keeps_them(logged_run):
    run, stderr = logged_run
    lines = [line for line in stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all("valid loss" in line and " acc " in line and line.endswith(" s") for line in lines)
    assert "━" not in stderr  # no progress bar in a log file
    log = (run / "train.log").read_text()
    assert "train synth: clcr/full" in log and all(line in log for line in lines)
    assert "trained synth: best epoch" in stderr and "{" not in stderr.split("trained synth:")[1].split("->")[0]
