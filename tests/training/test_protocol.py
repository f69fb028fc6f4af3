"""The audio-visual peers' protocol in training (issue 18): ResNet18 encoders, 224-px
views of stored frames (crops per frame, sample and epoch; resumable bit for bit), StepLR,
local pretrained weights, the positional table from the store, and an optimistic
test-best figure labelled as such."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from workspace import read_csv

from clcr_cli.config import EvalConfig, extract_config, train_config
from clcr_cli.errors import ConfigError, DataError
from clcr_cli.model.resnet import resnet18
from clcr_cli.pipeline import train
from clcr_cli.stages.evaluate import run_eval
from clcr_cli.stages.train import train_key
from clcr_cli.training.data import FrameViews, SplitData, batches, model_config

EXTRACT = {"dataset": "synth", "n_samples": 40, "part_size": 40}
PROTOCOL = {"task": "synth", "batch_size": 16, "d": 16, "num_heads": 2, "encoder": "resnet18",
            "frame_view": 24, "augment": True, "scheduler": "step", "step_size": 2, "step_gamma": 0.5}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("protocol")


def _train(workdir: Path, **options) -> Path:
    return train(train_config({}, {**PROTOCOL, **options}), extract_config({}, EXTRACT), workdir)


def _frames(n: int = 3) -> SplitData:
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (n, 2, 32, 32, 3), dtype=np.uint8))
    return SplitData([f"s{i}" for i in range(n)], {"video": frames}, {"video": torch.tensor([2, 1, 2][:n])},
                     torch.zeros(n, dtype=torch.long))


def test_views_draw_per_epoch_and_sample_and_replay_from_the_seed():
    split = _frames()

    def view(epoch: int | None) -> torch.Tensor:
        (batch,) = batches(split, 8, views=FrameViews(24, augment=True, seed=3, epoch=epoch))
        return batch.inputs["video"]

    first, again, other = view(0), view(0), view(1)
    assert first.shape == (3, 2, 24, 24, 3) and first.dtype == torch.uint8
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first[0, 0], first[0, 1])  # each frame draws its own crop (OGM-GE)
    assert first[1, 1].abs().sum() == 0  # a padded frame stays zero
    evaluation = view(None)  # no epoch: the whole frame resized, the same every time
    assert torch.equal(evaluation, view(None))
    import cv2

    expected = cv2.resize(split.inputs["video"][0, 0].numpy(), (24, 24), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(evaluation[0, 0].numpy(), expected)
    # the same views through the loader's worker processes
    (batch,) = batches(split, 8, views=FrameViews(24, augment=True, seed=3, epoch=0), workers=1)
    assert torch.equal(batch.inputs["video"], first)


def test_a_protocol_run_resizes_frames_steps_the_lr_and_grows_the_positional_table(workdir: Path):
    run = _train(workdir, epochs=3, max_len=8)
    history = read_csv(run / "history.csv")
    assert [float(r["lr"]) for r in history] == pytest.approx([2e-3, 2e-3, 1e-3])  # synth lr, StepLR(2, 0.5)
    meta = json.loads((run / "model.json").read_text())
    assert meta["model_config"]["encoder"] == "resnet18"
    assert meta["model_config"]["max_len"] == 201  # the store's longest (audio), not the 8 asked for
    weights = load_file(str(run / "model.safetensors"))
    assert weights["encoders.video.stem.trunk.layer4.1.bn2.weight"].shape == (512,)
    assert weights["encoders.video.stem.trunk.conv1.weight"].shape == (64, 3, 7, 7)
    assert weights["encoders.audio.stem.trunk.conv1.weight"].shape == (64, 1, 7, 7)
    assert meta["stats"]["audio"]["raw"] is True  # the spectrogram reaches the ResNet as stored


def _train_then_sigkill(workdir: str, kill_at: int) -> None:
    def after_epoch(epoch: int) -> None:
        if epoch == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    train(train_config({}, {**PROTOCOL, "epochs": 3}), extract_config({}, EXTRACT), Path(workdir), after_epoch=after_epoch)


def test_a_killed_augmented_run_resumes_bit_identical(workdir: Path, tmp_path: Path):
    uninterrupted = _train(workdir, epochs=3)
    proc = mp.get_context("spawn").Process(target=_train_then_sigkill, args=(str(tmp_path), 2))
    proc.start()
    proc.join(300)
    assert proc.exitcode == -signal.SIGKILL
    resumed = _train(tmp_path, epochs=3)
    a, b = load_file(str(resumed / "model.safetensors")), load_file(str(uninterrupted / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "resuming train synth from epoch 2/3" in (resumed / "train.log").read_text()


def test_test_best_is_the_best_test_epoch_and_labelled_optimistic(workdir: Path):
    run = _train(workdir, epochs=3, keep_test_best=True, seed=1)
    history = read_csv(run / "history.csv")
    meta = json.loads((run / "model.json").read_text())
    tests = [float(r["test_acc"]) for r in history]
    assert meta["test_best_score"] == max(tests) and meta["test_best_epoch"] == 1 + tests.index(max(tests))
    best = run_eval(run, EvalConfig(select="test-best"))
    assert best["optimistic"] is True and best["selection"] == "test-best"
    assert best["epoch"] == meta["test_best_epoch"] and best["metrics"]["acc"] == pytest.approx(max(tests))
    valid = run_eval(run, EvalConfig())
    assert valid["optimistic"] is False and valid["epoch"] == meta["best_epoch"]
    plain = _train(workdir, epochs=3, seed=2)
    with pytest.raises(ConfigError, match="was not trained with --keep-test-best"):
        run_eval(plain, EvalConfig(select="test-best"))


def test_pretrained_weights_load_by_name_and_their_content_is_part_of_the_key(workdir: Path, tmp_path: Path):
    torch.manual_seed(0)
    reference = resnet18(3, 1000)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    cfg = train_config({}, {**PROTOCOL, "epochs": 1, "lr": 0.0, "encoder_weights": f"video={path}"})
    run = train(cfg, extract_config({}, EXTRACT), workdir)
    weights = load_file(str(run / "model.safetensors"))
    assert torch.equal(weights["encoders.video.stem.trunk.layer3.0.conv1.weight"], reference.layer3[0].conv1.weight)
    key = train_key(cfg, "0123456789ab").digest
    torch.save(resnet18(3, 1000).state_dict(), path)  # other weights, the same path
    assert train_key(cfg, "0123456789ab").digest != key
    bad = train_config({}, {**PROTOCOL, "epochs": 1, "encoder_weights": f"text={path}"})
    with pytest.raises(DataError, match="no resnet18 encoder for 'text'"):
        train(bad, extract_config({}, EXTRACT), workdir)


def test_an_encoder_for_a_modality_the_store_lacks_is_refused(workdir: Path):
    from clcr_cli.model.errors import ModelConfigError
    from clcr_cli.store import FeatureStore

    (store_path,) = (workdir / "extract").glob("*/features.h5")
    with FeatureStore(store_path) as store, pytest.raises(ModelConfigError, match="no modality 'smell'"):
        model_config(train_config({}, {**PROTOCOL, "encoder": "smell=resnet18"}), store)
