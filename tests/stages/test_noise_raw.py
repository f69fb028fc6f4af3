"""``clcr noise --level raw``: noise on the media, extracted again with the store's settings."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clcr_cli.cli import app
from clcr_cli.config import EvalConfig, NoiseConfig
from clcr_cli.errors import DataError
from clcr_cli.features.perturb import RawNoise
from clcr_cli.pipeline import noise as run_noise
from clcr_cli.runs import extract_config_of, extraction_of
from clcr_cli.stages.evaluate import run_eval
from clcr_cli.stages.perturb import run_perturbed
from clcr_cli.store import FeatureStore


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _store(synth_run) -> Path:
    (folder,) = (synth_run.workdir / "extract").iterdir()
    return folder / "features.h5"


def test_the_store_records_every_extract_option(synth_run):
    with FeatureStore(_store(synth_run)) as store:
        cfg = extract_config_of(store)
    assert (cfg.dataset, cfg.n_samples, cfg.num_frames, cfg.frame_size, cfg.text_max_len) == ("synth", 160, 16, 32, 32)
    assert cfg == synth_run.extract  # the same options, the data's location included


def test_media_extracted_again_without_noise_are_the_store(synth_run):
    store_path = _store(synth_run)
    source = extraction_of(store_path, synth_run.workdir)
    with FeatureStore(store_path) as store:
        rows = store.split_indices("test")
        for m in store.modalities:
            again = run_perturbed(source, "test", m, RawNoise(seed=0), synth_run.workdir)
            with FeatureStore(again) as fresh:
                assert list(fresh.ids) == list(store.ids[rows]) and list(fresh.modalities) == [m]
                data, lengths = fresh.read(m)
            stored, stored_lengths = store.read(m, rows)
            assert np.array_equal(lengths, stored_lengths)
            t = data.shape[1 + (store.modalities[m].kind == "levels")]
            stored = stored[:, :, :t] if store.modalities[m].kind == "levels" else stored[:, :t]
            if m == "text":  # BERT in other batches: the same up to float rounding
                np.testing.assert_allclose(data, stored, atol=1e-5)
            else:
                assert np.array_equal(data, stored), m


def test_perturbed_media_are_cached_per_level_and_seed(synth_run):
    source = extraction_of(_store(synth_run), synth_run.workdir)
    noisy = run_perturbed(source, "test", "audio", RawNoise(seed=1, snr_db=0.0), synth_run.workdir)
    stamp = (noisy.parent / "manifest.json").stat().st_mtime_ns
    assert run_perturbed(source, "test", "audio", RawNoise(seed=1, snr_db=0.0), synth_run.workdir) == noisy
    assert (noisy.parent / "manifest.json").stat().st_mtime_ns == stamp
    other = run_perturbed(source, "test", "audio", RawNoise(seed=2, snr_db=0.0), synth_run.workdir)
    assert other != noisy
    with FeatureStore(noisy) as a, FeatureStore(other) as b, FeatureStore(_store(synth_run)) as clean:
        x, y = a.read("audio")[0], b.read("audio")[0]
        c = clean.read("audio", clean.split_indices("test"))[0]
        assert not np.array_equal(x, y) and not np.array_equal(x, c)
    params = json.loads((noisy.parent / "params.json").read_text())
    assert params["params"]["noise"]["snr_db"] == 0.0 and params["inputs"]["extract"] == source.key


def test_changed_media_are_refused_not_silently_used(synth_run, tmp_path: Path):
    (raw,) = (synth_run.workdir / "raw" / "synth").iterdir()
    clip = raw / "audio" / f"{read_csv(raw / 'transcripts.csv')[0]['id']}.wav"
    backup = tmp_path / "clip.wav"
    shutil.copy2(clip, backup)
    try:
        clip.write_bytes(clip.read_bytes() + b"\x00\x00")  # generated media enter by size
        with pytest.raises(DataError, match="not what it was extracted from"):
            extraction_of(_store(synth_run), synth_run.workdir)
    finally:
        shutil.copy2(backup, clip)


def test_raw_noise_level_zero_is_eval_and_the_highest_lowers_accuracy(synth_run):
    cfg = NoiseConfig(level="raw", modality="all", models=("clcr",), noise_seeds=(0, 1),
                      snr_db=(10.0, -5.0), pixel_sigma=(32.0, 160.0), text_rate=(0.1, 0.6))
    out = run_noise(synth_run.train, synth_run.extract, cfg, synth_run.workdir)
    rows = read_csv(out / "curves.csv")
    assert list(rows[0])[:5] == ["model", "modality", "step", "setting", "seed"]
    clean = {k: v for k, v in run_eval(synth_run.run, EvalConfig())["metrics"].items() if k != "confusion"}
    for r in (r for r in rows if r["step"] == "0"):
        assert r["setting"] == "clean" and {k: float(r[k]) for k in clean} == clean
    loud = [float(r["acc"]) for r in rows if r["step"] == "2"]
    assert len(loud) == 2 and max(loud) < clean["acc"] - 0.1, (loud, clean["acc"])
    assert {r["setting"] for r in rows if r["step"] == "2"} == {"-5 dB / char 0.6 / σ 160"}
    summary = read_csv(out / "summary.csv")
    assert [r["step"] for r in summary] == ["0", "1", "2"]
    (robust,) = read_csv(out / "robustness.csv")
    means = [float(r["acc_mean"]) for r in summary]
    assert float(robust["relative_robustness_acc"]) == pytest.approx(np.trapezoid(means, [0, 1, 2]) / 2)
    assert (out / "noise_raw_acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each (modality, step, seed) extracted once, into its own cached output
    assert len(list((synth_run.workdir / "perturb").glob("synth-*/manifest.json"))) >= 3 * 2 * 2


def test_raw_noise_options_are_checked_before_any_work(synth_run):
    def error(*args: str) -> str:
        result = CliRunner().invoke(app, ["noise", *synth_run.train_args(), "--level", "raw", *args])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and lines[-1].startswith("error:"), result.output
        return lines[-1]

    assert "every medium needs as many steps" in error("--modality", "all", "--snr-db", "10")
    assert "--snr-db: needs at least 1 strictly decreasing" in error("--snr-db", "0,10")
    assert "--sigmas: not an option of a sweep of --level raw" in error("--sigmas", "0,1")
    assert "--text-unit: must be one of char, word" in error("--text-unit", "line")
