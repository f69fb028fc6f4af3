"""The perturb stage (:func:`run_perturbed`, for ``clcr noise --level raw``): a split's media
extracted again, perturbed, with the settings its store records; cached per noise level
and seed; media that changed since the extraction refused. (The perturbations themselves:
tests/features/test_perturb.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from workspace import read_csv

from clcr_cli.errors import DataError
from clcr_cli.features.perturb import RawNoise
from clcr_cli.runs import extract_config_of, extraction_of
from clcr_cli.stages.perturb import run_perturbed
from clcr_cli.store import FeatureStore


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
