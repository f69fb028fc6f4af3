"""The sentiment peers' protocol (issue 19): token ids from an MMSA pickle, a BERT run and
fine-tuned inside the model, resumable bit for bit, with its own key."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clcr_cli.config import extract_config, train_config
from clcr_cli.features.text import TextLevelEncoder
from clcr_cli.pipeline import train
from clcr_cli.stages.extract import run_extract
from clcr_cli.stages.train import train_key
from clcr_cli.store import FeatureStore
from clcr_cli.training.text_weights import load_bert_folder

SIZES = {"train": 24, "valid": 8, "test": 8}
WORDS = ["good", "bad", "great", "awful", "fine", "movie", "plot", "actors"]
TOKEN_LEN = 12
QUICK = {"task": "mosi", "epochs": 2, "batch_size": 8, "d": 16, "num_heads": 2, "optimizer": "adamw",
         "lr": 1e-3, "text_lr": 1e-4, "text_finetune": True}


def write_mmsa(root: Path, ids: str) -> Path:
    """An aligned MMSA pickle whose text_bert are MiniLM's ids of raw_text (``ids="same"``) or noise."""
    rng = np.random.default_rng(0)
    encoder = TextLevelEncoder(max_len=TOKEN_LEN, load_model=False)
    data = {}
    for split, n in SIZES.items():
        texts = [" ".join(rng.choice(WORDS, 4)) for _ in range(n)]
        tokens, _ = encoder.tokens(texts)
        if ids != "same":
            tokens = np.random.default_rng(1).integers(0, 1000, tokens.shape).astype(np.int32)
        data[split] = {
            "raw_text": texts, "id": np.array([f"{split}{i}$_$0" for i in range(n)], dtype=object),
            "audio": rng.normal(size=(n, 6, 5)).astype(np.float32), "vision": rng.normal(size=(n, 6, 20)).astype(np.float32),
            "text_bert": tokens.astype(np.float32), "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        }
    path = root / "Processed" / "aligned_50.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(data, protocol=4))
    return root


def _extract(root: Path, workdir: Path) -> Path:
    return run_extract(_extract_cfg(root), workdir)


def _extract_cfg(root: Path):
    return extract_config({}, {"dataset": "mosi", "root": str(root), "aligned": True, "text_tokens": True,
                               "text_max_len": TOKEN_LEN})


def test_the_pickles_ids_are_used_when_the_tokenizer_gives_them_else_raw_text(tmp_path: Path):
    same = _extract(write_mmsa(tmp_path / "same", "same"), tmp_path / "w1")
    other = _extract(write_mmsa(tmp_path / "other", "noise"), tmp_path / "w2")
    with FeatureStore(same) as a, FeatureStore(other) as b:
        assert a.settings["text"]["ids"] == "text_bert" and b.settings["text"]["ids"] == "raw_text"
        assert a.modalities["text"].kind == "tokens" and a.modalities["text"].dtype == "int32"
        ids_a, len_a = a.read("text", np.arange(len(a)))
        ids_b, _ = b.read("text", np.arange(len(b)))
    assert ids_a.shape[1] == 3 and np.array_equal(ids_a, ids_b)  # noise ids were not used: raw_text was
    assert (ids_a[:, 1].sum(1) == len_a).all()


@pytest.fixture(scope="module")
def mosi(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("mosi")
    root = write_mmsa(base / "MOSI", "same")
    _extract(root, base / "data")
    return root, base / "data"


def test_fine_tuning_changes_the_bert_and_frozen_is_another_run(mosi):
    root, workdir = mosi
    run = train(train_config({}, QUICK), _extract_cfg(root), workdir)
    weights = load_file(str(run / "model.safetensors"))
    _, loaded = load_bert_folder(Path(TextLevelEncoder(load_model=False).path))
    key = "encoders.text.bert.encoder.layer.5.output.dense.weight"
    start = loaded["encoder.layer.5.output.dense.weight"]
    assert weights[key].shape == start.shape and not torch.equal(weights[key], start)
    frozen_cfg = train_config({}, {**QUICK, "text_finetune": False})
    frozen = train(frozen_cfg, _extract_cfg(root), workdir)
    assert frozen != run and train_key(frozen_cfg, "0" * 12).digest != train_key(train_config({}, QUICK), "0" * 12).digest
    assert torch.equal(load_file(str(frozen / "model.safetensors"))[key], start)  # as loaded


def _train_then_sigkill(root: str, workdir: str) -> None:
    def after_epoch(epoch: int) -> None:
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    train(train_config({}, {**QUICK, "seed": 3}), _extract_cfg(Path(root)), Path(workdir), after_epoch=after_epoch)


def test_a_killed_fine_tuning_run_resumes_bit_identical(mosi, tmp_path: Path):
    root, workdir = mosi
    uninterrupted = train(train_config({}, {**QUICK, "seed": 3}), _extract_cfg(root), workdir)
    proc = mp.get_context("spawn").Process(target=_train_then_sigkill, args=(str(root), str(tmp_path)))
    proc.start()
    proc.join(300)
    assert proc.exitcode == -signal.SIGKILL
    resumed = train(train_config({}, {**QUICK, "seed": 3}), _extract_cfg(root), tmp_path)
    a, b = load_file(str(resumed / "model.safetensors")), load_file(str(uninterrupted / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
