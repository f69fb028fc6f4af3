"""The command line refuses misuse in one line, before any work: option values out of range,
a config file's unknown section, a workspace that is not there, and options the data
refuses, before anything is trained."""

from __future__ import annotations

from pathlib import Path

import pytest
from workspace import TRAIN, clcr, error_line, snapshot


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["extract", "--max-seconds", "-1"], "--max-seconds: must be at least 0.01, got -1.0"),
        (["extract", "--fps", "0"], "--fps: must be at least 0.01, got 0.0"),
        (["noise", "--sigmas", "-1,0"], "--sigmas: must be at least 0, got -1.0"),
        (["train", "--set", "lambda_intra=-5"], "--set lambda_intra: must be at least 0, got -5.0"),
        (["ablate", "--budget-sweep", "0.5,0"], "--budget-sweep: must be more than 0, got 0.0"),
        (["train", "--set", "lr=nan"], "--set lr: must be a finite number, got nan"),
        (["train", "--seeds", "1,-2"], "--seeds: expected seeds of 0 or more, got '1,-2'"),
        (["train", "--nproc", "0"], "Invalid value for '--nproc': Input should be greater than or equal to 1"),
        (["train", "--precision", "fp16", "--device", "cpu"],
         "--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU"),
        (["report"], "{workdir}: no such workspace folder (nothing to report)"),
        (["status"], "{workdir}: no such workspace folder"),
        (["train", "--config", "{config}"],
         "{config}: unknown section(s) trian; sections: extract, train, eval, ablate, noise, predict"),
    ],
)
def test_misuse_is_one_line_before_any_work(tmp_path: Path, args: list[str], message: str):
    workdir, config = tmp_path / "typo", tmp_path / "c.toml"
    config.write_text("[trian]\nepochs = 3\n")
    args = [a.format(config=config) for a in args]
    result = clcr(*args, "--workdir", workdir)
    assert error_line(result) == "error: " + message.format(workdir=workdir, config=config)
    assert len(result.output.strip().splitlines()) == 1
    assert not workdir.exists()  # nothing was created: no work began


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--missing", "text", "--missing", "audio,video"],
         "--missing text, audio, video: leaves no modality to evaluate with"),
        (["eval", "--missing", "smell"], "--missing smell: the task's modalities are "),
        (["noise", "--modality", "smell"], "--modality smell: the task's modalities are "),
        (["noise", "--models", "clcr,transformer"], "--models transformer: the models are clcr, "),
        (["train", "--num-levels", "4"], "modality 'text' holds 3 stored hidden-state level(s) but the model needs num_levels=4"),
        # (a --max-len shorter than the data grows to the store's longest sequence since issue 18)
        (["train", "--encoder", "smell=resnet18"], "encoder: no modality 'smell' in "),
    ],
)
def test_options_the_data_refuses_fail_before_training(ws: Path, args: list[str], message: str):
    before = snapshot(ws / "data")
    command, *rest = args
    result = clcr(command, "--config", ws / "c.toml", "--workdir", ws / "data", *TRAIN, "--epochs", "50", *rest)
    assert error_line(result).startswith("error: " + message)
    assert snapshot(ws / "data") == before  # nothing was trained
