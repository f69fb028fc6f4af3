"""The benchmarks measure: every figure comes with a reference and ratio = value / reference."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench import media
from bench.common import Figure, Result, growth, write_json


def _check_measured(result: Result) -> None:
    assert result.figures
    for figure in result.figures:
        assert math.isfinite(figure.value) and math.isfinite(figure.reference), figure
        assert figure.reference > 0, figure
        assert figure.ratio == figure.value / figure.reference


def test_media_benchmarks_measure_against_a_reference(tmp_path):
    audio = media.run_audio(10, tmp_path, repeats=1)
    video = media.run_video(10, tmp_path, repeats=1)
    for result in (audio, video):
        _check_measured(result)
        assert result.work == {"clips": 10}
        rate, seconds = result.figures[0], result.figures[1]
        # clips/s is the clip count over the measured seconds, for both sides
        assert math.isclose(rate.value, 10 / seconds.value)
        assert math.isclose(rate.reference, 10 / seconds.reference)
    # the bare reference returns the frames clcr returns (same files, same sampling)
    from clcr_cli.config import extract_config
    from clcr_cli.features.video import read_frames

    cfg = extract_config({}, {"dataset": "synth"})
    path = next((tmp_path / "raw" / "synth").glob("*/video/*.mp4"))
    bare = media.bare_opencv_frames(path, cfg.num_frames, cfg.frame_size)
    assert (bare == read_frames(path, cfg.num_frames, cfg.frame_size)).all()
    # JSON carries the ratio; growth compares a cost with the smallest size's
    small = Result("x", "small", {"n": 1}, [Figure("t", 2.0, "r", 1.0, "s", grows=True)])
    large = Result("x", "large", {"n": 16}, [Figure("t", 8.0, "r", 1.0, "s", grows=True)])
    (grown,) = growth([small, large])
    assert grown.figures[0].ratio == 4.0
    write_json(tmp_path / "out.json", [audio, grown], {})
    saved = json.loads((tmp_path / "out.json").read_text())["results"]
    assert saved[0]["figures"][0]["ratio"] == audio.figures[0].ratio
    assert saved[1]["figures"][0]["reference"] == 2.0


def test_overhead_shares_are_measured_for_clcr_and_zero_for_a_baseline():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "model"))
    from model_fixtures import tiny_batch, tiny_config

    from bench.overhead import measure_overhead
    from clcr_cli.model import build_model

    clcr = build_model(tiny_config())
    before = {k: v.clone() for k, v in clcr.state_dict().items()}
    shares = measure_overhead(clcr, tiny_batch(clcr.config, 8), repeats=1)
    assert shares["step_seconds"] > 0
    assert 0 < shares["orthogonal_share"] < 1 and 0 < shares["whitening_share"] < 1
    for k, v in clcr.state_dict().items():  # measuring leaves the model as it was
        assert torch.equal(v, before[k]), k
    late = build_model(tiny_config(model="late-fusion"))
    shares = measure_overhead(late, tiny_batch(late.config, 8), repeats=1)
    assert shares["orthogonal_share"] == 0 and shares["whitening_share"] == 0


def test_training_memory_store_has_the_declared_shapes_and_splits(tmp_path):
    from bench import streaming
    from clcr_cli.store import FeatureStore

    with FeatureStore(streaming.write_store(tmp_path, 40)) as store:
        assert len(store) == 40 and store.num_classes == 8
        assert {m: info.shape for m, info in store.modalities.items()} == streaming.SHAPES
        assert len(store.split_indices("train")) == 28
        assert not list(tmp_path.glob("part-*.h5"))  # the parts are removed once joined


@pytest.mark.slow
def test_training_benchmarks_measure_against_a_reference(tmp_path):
    """The training and training-memory benchmarks run end to end on tiny data (a
    benchmark that only runs in `python -m bench` breaks unseen when the library moves)."""
    from bench import streaming, training

    steps = training.run(24, tmp_path / "training", epochs=1)
    _check_measured(steps)
    assert steps.notes["d"] == 64 and steps.notes["optimizer"] == "adamw"  # the demo's recipe
    ops = next(f for f in steps.figures if f.name == "clcr aten ops per step")
    assert ops.value > ops.reference > 0  # CLCR dispatches more operations than late fusion
    memory = streaming.run(8, tmp_path / "memory")
    _check_measured(memory)
    assert memory.work == {"N": 8, "16N": 128, "train N": 8, "train 16N": 92}
