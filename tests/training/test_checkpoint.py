"""last.pt is bound to the run that wrote it (issue 22, item 1): a checkpoint copied from
another run, or forged, is reported and the run starts from epoch 0; status --verify checks
the binding of a complete run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from clcr_cli.cli import app
from clcr_cli.config import extract_config, train_config
from clcr_cli.pipeline import train
from clcr_cli.training.checkpoint import CHECKPOINT, read_run_key

EXTRACT = {"dataset": "synth", "n_samples": 40, "part_size": 40}
QUICK = {"task": "synth", "batch_size": 16, "d": 16, "num_heads": 2}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bound")


def _train(workdir: Path, console=None, **options) -> Path:
    return train(train_config({}, {**QUICK, **options}), extract_config({}, EXTRACT), workdir, console=console)


def _history_rows(run: Path) -> int:
    return len((run / "history.csv").read_text().splitlines()) - 1


def test_a_checkpoint_records_its_run_and_model_json_its_data(workdir: Path):
    run = _train(workdir, epochs=2)
    assert read_run_key(run / CHECKPOINT) == run.name.rsplit("-", 1)[1]
    meta = json.loads((run / "model.json").read_text())
    assert meta["run_key"] == run.name.rsplit("-", 1)[1]
    assert len(meta["store_sha256"]) == 64 and meta["extract_key"]
    assert meta["data"]["target"] == "classification" and len(meta["data"]["class_names"]) == 8
    assert meta["extract"]["frame_size"] == 32 and meta["extract"]["text"]["layers"]
    assert set(meta["versions"]) == {"clcr", "torch"} and "store" not in meta
    assert "/" not in json.dumps(meta["extract"]).replace("\\/", "")  # no absolute path


def test_a_foreign_checkpoint_restarts_the_run_from_epoch_0(workdir: Path, capsys):
    other = _train(workdir, epochs=2, seed=1)  # another run: other options, fewer epochs
    run = _train(workdir, epochs=3, seed=2)
    (run / "manifest.json").unlink()  # the run again, as if killed, with the other run's last.pt
    shutil.copyfile(other / CHECKPOINT, run / CHECKPOINT)
    capsys.readouterr()
    again = _train(workdir, epochs=3, seed=2)
    err = " ".join(capsys.readouterr().err.split())
    assert again == run
    assert "not this run's checkpoint (written by another run" in err and "training from epoch 0" in err
    assert "resuming" not in err
    assert _history_rows(again) == 3 and read_run_key(again / CHECKPOINT) == again.name.rsplit("-", 1)[1]


def test_a_forged_last_epoch_checkpoint_is_not_taken_for_a_finished_run(workdir: Path, capsys):
    run = _train(workdir, epochs=2, seed=3)
    good = json.loads((run / "model.json").read_text())["best_score"]
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    ckpt["best_state"] = {k: torch.zeros_like(v) for k, v in ckpt["best_state"].items()}
    ckpt["best_score"] = 99.0  # forged: the right run key, but a score its history never had
    torch.save(ckpt, run / CHECKPOINT)
    (run / "manifest.json").unlink()
    again = _train(workdir, epochs=2, seed=3)
    assert "not its history's" in capsys.readouterr().err
    assert json.loads((again / "model.json").read_text())["best_score"] == good != 99.0


def test_status_verify_names_a_checkpoint_of_another_run(workdir: Path):
    run = _train(workdir, epochs=2, seed=4)
    other = _train(workdir, epochs=2, seed=5)
    assert CliRunner().invoke(app, ["status", "--workdir", str(workdir), "--verify"]).exit_code == 0
    shutil.copyfile(other / CHECKPOINT, run / CHECKPOINT)
    manifest = json.loads((run / "manifest.json").read_text())  # the file sizes still match
    manifest["files"][CHECKPOINT] = {"size": (run / CHECKPOINT).stat().st_size}
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["status", "--workdir", str(workdir), "--verify"])
    assert result.exit_code == 1
    assert f"last.pt: not written by run {run.name.rsplit('-', 1)[1]}" in " ".join(result.output.split())
