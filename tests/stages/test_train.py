"""The train stage on small generated data: what a run learns and writes, its checkpoint,
kill-and-resume, model options from flags, --set and TOML, and a workspace it cannot write.
(The training loop itself: tests/training/test_loop.py.)"""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner
from workspace import QUICK, TRAIN, clcr, error_line, extract_cfg, read_csv, snapshot

from clcr_cli.cli import app
from clcr_cli.config import EvalConfig, TrainConfig, train_config
from clcr_cli.pipeline import train as run_train
from clcr_cli.stages.evaluate import run_eval


def test_training_beats_chance_and_constant_predictor(trained: Path):
    metrics = run_eval(trained, EvalConfig())
    acc = metrics["metrics"]["acc"]
    # 8 balanced classes: chance and the constant predictor are both about 1/8
    labels = [int(r["label"]) for r in _predictions(trained)]
    majority = np.bincount(labels).max() / len(labels)
    assert acc >= max(0.4, majority + 0.2), (acc, majority)
    history = read_csv(trained / "history.csv")
    assert len(history) == QUICK["epochs"]
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"])
    for column in ("train_task", "train_intra", "train_inter", "valid_acc", "samples_per_s"):
        assert column in history[0]
    timing = json.loads((trained / "timing.json").read_text())
    assert timing["epochs_run"] == QUICK["epochs"] and timing["mean_samples_per_s"] > 0


def _predictions(train_dir: Path) -> list[dict[str, str]]:
    (eval_dir,) = (train_dir / "eval").iterdir()
    return read_csv(eval_dir / "predictions.csv")


def test_checkpoint_is_safetensors_and_weights_only(trained: Path):
    state = load_file(str(trained / "model.safetensors"))
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    ckpt = torch.load(trained / "last.pt", weights_only=True)
    assert ckpt["epoch"] == QUICK["epochs"]


def _train_then_sigkill(workdir: str, cfg: TrainConfig, kill_at_epoch: int) -> None:
    def after_epoch(epoch: int) -> None:
        if epoch == kill_at_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    run_train(cfg, extract_cfg(), Path(workdir), after_epoch=after_epoch)


def _history_without_timing(train_dir: Path) -> list[dict[str, str]]:
    rows = read_csv(train_dir / "history.csv")
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in rows]


def test_sigkill_then_resume_is_bit_identical(workdir: Path, trained: Path, tmp_path: Path):
    cfg = train_config({}, {"task": "synth", **QUICK, "epochs": 5})
    uninterrupted = run_train(cfg, extract_cfg(), workdir)
    shutil.copytree(workdir / "extract", tmp_path / "extract")  # same store, fresh train folder
    proc = mp.get_context("spawn").Process(target=_train_then_sigkill, args=(str(tmp_path), cfg, 3))
    proc.start()
    proc.join(300)
    assert proc.exitcode == -signal.SIGKILL
    (partial,) = (tmp_path / "train").iterdir()
    assert not (partial / "manifest.json").exists()
    assert torch.load(partial / "last.pt", weights_only=True)["epoch"] == 3
    resumed = run_train(cfg, extract_cfg(), tmp_path)
    params = [json.loads((d / "params.json").read_text())["params"] for d in (resumed, uninterrupted)]
    assert params[0] == params[1]
    a, b = load_file(str(resumed / "model.safetensors")), load_file(str(uninterrupted / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _history_without_timing(resumed) == _history_without_timing(uninterrupted)
    assert run_eval(resumed, EvalConfig())["metrics"] == run_eval(uninterrupted, EvalConfig())["metrics"]


def test_cli_model_options_from_flags_set_and_toml_reach_the_model(workdir: Path, trained: Path, tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text("[train]\nepochs = 1\n\n[train.model]\nshared_dim = 8\n")
    args = ["train", "--task", "synth", "--workdir", str(workdir), "--config", str(config),
            "--set", "model.budget_scale=2.0", "--tcn-kernel", "5", "--no-learn-budget"]
    for k, v in QUICK.items():
        args += [f"--{k.replace('_', '-')}", str(v)] if k != "epochs" else []
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = Path(result.stdout.strip())
    model = json.loads((out / "model.json").read_text())["model_config"]
    assert (model["shared_dim"], model["budget_scale"], model["tcn_kernel"], model["learn_budget"]) == (8, 2.0, 5, False)
    assert (model["d"], model["num_heads"]) == (QUICK["d"], QUICK["num_heads"])
    params = json.loads((out / "params.json").read_text())["params"]
    assert params["shared_dim"] == 8 and params["whitening"] == "standardise"  # every model option is keyed


def test_a_read_only_workdir_is_one_line(ws: Path, monkeypatch):
    before = snapshot(ws / "data")
    mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.parent == ws / "data" / "train":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = clcr("train", "--config", ws / "c.toml", "--workdir", ws / "data", *TRAIN, "--seed", "5")
    assert error_line(result).startswith(f"error: {ws / 'data' / 'train'}/synth-")
    assert error_line(result).endswith(": Read-only file system")
    assert snapshot(ws / "data") == before
