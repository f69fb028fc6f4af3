"""The dataset registry: built-in names, manifest datasets, helpful errors."""

from __future__ import annotations

import pytest

from clcr_cli.datasets import LOADERS, load_dataset, skipped_samples
from clcr_cli.datasets.base import Dataset, DatasetInfo, DatasetOptions
from clcr_cli.errors import ConfigError, DataError


def test_registry_names():
    assert set(LOADERS) == {"synth", "synth-reg", "cremad", "ks", "ave", "ucf101", "mosi", "mosei"}


def test_unknown_name_lists_known_ones_and_suggests_manifest():
    with pytest.raises(
        ConfigError,
        match=r"unknown dataset 'vggsound': known datasets are synth, synth-reg, cremad, ks, ave, ucf101, mosi, mosei; for your own data pass --manifest FILE.csv",
    ):
        load_dataset("vggsound", DatasetOptions())


def test_manifest_name_rules(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,split,label,text\na,train,x,hi\n")
    with pytest.raises(ConfigError, match="'cremad' is a built-in dataset"):
        load_dataset("cremad", DatasetOptions(manifest=manifest))
    with pytest.raises(ConfigError, match="dataset name '../up'"):
        load_dataset("../up", DatasetOptions(manifest=manifest))
    with pytest.raises(
        DataError, match=r"m.csv: cannot carve a valid split from 1 train group\(s\)"
    ):
        load_dataset("mine", DatasetOptions(manifest=manifest))


def test_real_loaders_need_a_root(tmp_path):
    for name in ("cremad", "ks", "ave", "ucf101", "mosi", "mosei"):
        with pytest.raises(ConfigError, match=f"dataset '{name}' needs --root"):
            load_dataset(name, DatasetOptions())


def test_skipped_samples_of_a_plain_dataset_is_empty(tmp_path):
    info = DatasetInfo(name="x", target="regression", modalities={"text": "text"})
    assert skipped_samples(Dataset(info=info, samples=[], root=tmp_path)) == ()
