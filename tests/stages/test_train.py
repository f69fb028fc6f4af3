"""train / eval / ablate / noise on small generated data."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from clcr_cli.cli import app
from clcr_cli.config import (
    AblateConfig,
    EvalConfig,
    NoiseConfig,
    TrainConfig,
    extract_config,
    train_config,
)
from clcr_cli.model.batch import Batch
from clcr_cli.pipeline import ablate as run_ablate
from clcr_cli.pipeline import noise as run_noise
from clcr_cli.pipeline import train as run_train
from clcr_cli.stages.evaluate import run_eval
from clcr_cli.stages.noise import gaussian_noise, noised_sets
from clcr_cli.training.data import FeatureStats

N_SAMPLES = 160
EXTRACT = {"dataset": "synth", "n_samples": N_SAMPLES, "part_size": 40}
QUICK = dict(epochs=12, batch_size=16, lr=3e-3, optimizer="adamw", d=32, num_heads=2)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def extract_cfg(task: str = "synth"):
    return extract_config({}, {**EXTRACT, "dataset": task})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stages")


@pytest.fixture(scope="module")
def trained(workdir: Path) -> Path:
    return run_train(train_config({}, {"task": "synth", **QUICK}), extract_cfg(), workdir)


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


def test_eval_writes_metrics_and_predictions_next_to_checkpoint(trained: Path):
    metrics = run_eval(trained, EvalConfig())
    rows = _predictions(trained)
    assert len(rows) == metrics["num_samples"]
    assert list(rows[0])[:4] == ["id", "split", "label", "prediction"]
    probs = np.array([[float(r[c]) for c in r if c.startswith("prob_")] for r in rows])
    assert probs.shape[1] == 8
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    acc = np.mean([int(r["label"]) == int(r["prediction"]) for r in rows])
    assert acc == pytest.approx(metrics["metrics"]["acc"])
    assert np.array(metrics["metrics"]["confusion"]).sum() == len(rows)
    assert len(metrics["level_weights"]) == 3 and len(metrics["modality_weights"]) == 3
    np.testing.assert_allclose(sum(metrics["level_weights"]), 1.0, atol=1e-4)


def test_eval_with_missing_modality_changes_predictions(trained: Path):
    clean = run_eval(trained, EvalConfig())
    missing = run_eval(trained, EvalConfig(missing=("text",)))
    assert missing["missing"] == ["text"]
    assert missing["loss"] != clean["loss"]


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


def test_noise_sigma_zero_equals_clean_and_is_cached(workdir: Path, trained: Path):
    base = train_config({}, {"task": "synth", **QUICK})
    cfg = NoiseConfig(sigmas=(0.0, 0.5, 4.0), noise_seeds=(0, 1), models=("clcr",), modality="all")
    out = run_noise(base, extract_cfg(), cfg, workdir)
    rows = read_csv(out / "curves.csv")
    clean = run_eval(trained, EvalConfig())["metrics"]["acc"]
    zero = [float(r["acc"]) for r in rows if float(r["sigma"]) == 0.0]
    assert zero and all(a == clean for a in zero)
    loud = np.mean([float(r["acc"]) for r in rows if float(r["sigma"]) == 4.0])
    assert loud < clean
    assert {r["modality"] for r in rows} == {"all"}
    assert (out / "noise_acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    robust = read_csv(out / "robustness.csv")
    assert len(robust) == 1
    mtime = (out / "manifest.json").stat().st_mtime_ns
    assert run_noise(base, extract_cfg(), cfg, workdir) == out
    assert (out / "manifest.json").stat().st_mtime_ns == mtime


def test_ablate_table_and_cached_reuse(workdir: Path, trained: Path):
    base = train_config({}, {"task": "synth", **QUICK, "epochs": 2})
    cfg = AblateConfig(variants=("full", "full-mix"), seeds=(0,))
    out = run_ablate(base, extract_cfg(), cfg, workdir)
    rows = read_csv(out / "ablation.csv")
    assert [r["label"] for r in rows] == ["full", "full-mix"]
    assert float(rows[0]["delta"]) == 0.0
    runs = read_csv(out / "runs.csv")
    delta = float(runs[1]["acc"]) - float(runs[0]["acc"])
    assert float(rows[1]["delta"]) == pytest.approx(delta)
    assert "| full-mix |" in (out / "ablation.md").read_text()
    trains = {r["train"]: Path(r["train"], "manifest.json").stat().st_mtime_ns for r in runs}
    table = (out / "manifest.json").stat().st_mtime_ns
    assert run_ablate(base, extract_cfg(), cfg, workdir) == out  # reuses every run and the table
    assert (out / "manifest.json").stat().st_mtime_ns == table
    assert all(Path(t, "manifest.json").stat().st_mtime_ns == m for t, m in trains.items())


def test_cli_eval_json(workdir: Path, trained: Path):
    args = ["eval", "--task", "synth", "--workdir", str(workdir), "--json"]
    for k, v in QUICK.items():
        args += ["--set", f"{k}={json.dumps(v)}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["runs"][0]["train"] == str(trained)
    assert payload["mean_std"]["acc"][1] == 0.0


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


def _slowed(monkeypatch, module, name: str) -> list[int]:
    """Replace ``module.name`` by a slower version that counts its calls."""
    calls: list[int] = []
    original = getattr(module, name)

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(2)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, slow)
    return calls


def _twice_at_once(run):
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda _: run(), range(2)))


def test_concurrent_eval_ablate_and_noise_do_the_work_once(workdir: Path, trained: Path, monkeypatch):
    from clcr_cli.stages import ablate, evaluate, noise

    quiet = Console(quiet=True)
    calls = _slowed(monkeypatch, evaluate, "evaluate")
    first, second = _twice_at_once(lambda: run_eval(trained, EvalConfig(split="valid"), console=quiet))
    assert len(calls) == 1 and first == second
    base = train_config({}, {"task": "synth", **QUICK})
    calls = _slowed(monkeypatch, ablate, "write_tables")
    cfg = AblateConfig(variants=("full",), split="valid")
    first, second = _twice_at_once(lambda: run_ablate(base, extract_cfg(), cfg, workdir, console=quiet))
    assert len(calls) == 1 and first == second
    calls = _slowed(monkeypatch, noise, "sweep")
    cfg = NoiseConfig(sigmas=(0.0, 1.0), noise_seeds=(7,), models=("clcr",), modality="all", split="valid")
    first, second = _twice_at_once(lambda: run_noise(base, extract_cfg(), cfg, workdir, console=quiet))
    assert len(calls) == 1 and first == second


@pytest.mark.slow
def test_regression_task_reports_mosi_metrics(workdir: Path):
    out = run_train(train_config({}, {"task": "synth-reg", **QUICK}), extract_cfg("synth-reg"), workdir)
    m = run_eval(out, EvalConfig())["metrics"]
    assert set(m) == {"mae", "corr", "acc7", "acc5", "has0_acc2", "has0_f1", "non0_acc2", "non0_f1"}
    assert m["corr"] > 0.3


def test_noise_scales_with_training_std_and_spares_padding():
    kinds = {"a": "sequence", "t": "levels", "v": "frames"}
    stats = FeatureStats(
        mean={"t": torch.zeros(2, 3), "v": torch.zeros(3)},
        std={"t": torch.tensor([[1.0, 2.0, 4.0]] * 2), "v": torch.tensor([10.0, 20.0, 40.0])},
    )
    batch = Batch(
        inputs={"a": torch.zeros(64, 5, 2), "t": torch.zeros(64, 2, 5, 3), "v": torch.zeros(64, 5, 2, 2, 3, dtype=torch.uint8)},
        lengths={m: torch.full((64,), 3) for m in kinds},
        target=torch.zeros(64),
    )
    noisy = gaussian_noise(0.5, list(kinds), kinds, stats, torch.Generator().manual_seed(0))(batch).inputs
    assert noisy["a"][:, :3].std().item() == pytest.approx(0.5, rel=0.1)
    assert not noisy["a"][:, 3:].any() and not noisy["t"][:, :, 3:].any() and not noisy["v"][:, 3:].any()
    per_dim = noisy["t"][:, :, :3].reshape(-1, 3).std(0)
    torch.testing.assert_close(per_dim, torch.tensor([0.5, 1.0, 2.0]), rtol=0.15, atol=0)
    per_channel = noisy["v"][:, :3].reshape(-1, 3).std(0)
    torch.testing.assert_close(per_channel, torch.tensor([5.0, 10.0, 20.0]), rtol=0.15, atol=0)
    assert gaussian_noise(0.0, list(kinds), kinds, stats, torch.Generator())(batch) is batch
    assert noised_sets(NoiseConfig(modality="each"), ["a", "t"]) == {"a": ["a"], "t": ["t"]}
    assert noised_sets(NoiseConfig(modality="all"), ["a", "t"]) == {"all": ["a", "t"]}


def test_report_collects_every_result(workdir: Path, trained: Path):
    # runs after the eval, noise and ablate tests of this module filled the workspace
    result = CliRunner().invoke(app, ["report", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    out = workdir / "report"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for title in ("Evaluations", "Adaptive level and modality importance", "Ablation:", "Noise robustness:"):
        assert title in md and html_escape(title) in page
    assert "| synth | clcr | full | 0 | test |" in md
    assert f"curves_{trained.name}.png" in md and (out / f"curves_{trained.name}.png").is_file()
    for name in ("level_weights_synth.png", "modality_weights_synth.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    separators = [line for line in md.splitlines() if line.startswith("|---")]
    assert page.count("<table>") == len(separators) > 0 and "<img src=" in page


def html_escape(text: str) -> str:
    import html

    return html.escape(text)
