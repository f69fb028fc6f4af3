"""The dataset registry: a name -> a loader that finds the samples (decodes nothing).

``load_dataset(name, options)`` calls the built-in loader of that name; any other name
with ``options.manifest`` set registers the user's CSV manifest under that name.
Loaders of real datasets return a :class:`~clcr_cli.datasets.layout.LoadedDataset`,
whose ``samples`` are all usable; ``skipped_samples(dataset)`` gives the clips that were
found but left out, with a reason each (empty for datasets that skip nothing).
"""

from __future__ import annotations

from collections.abc import Callable

from clcr_cli.cache import is_folder_name
from clcr_cli.datasets import ave, cremad, ks, manifest, mmsa, ucf101
from clcr_cli.datasets.base import TARGETS, Dataset, DatasetOptions
from clcr_cli.datasets.layout import LoadedDataset, Skipped
from clcr_cli.errors import ConfigError


def load_synth(options: DatasetOptions) -> Dataset:
    from clcr_cli.datasets import synth  # imported on use: the synthetic task is optional here

    return synth.load(options)


def load_synth_regression(options: DatasetOptions) -> Dataset:
    from clcr_cli.datasets import synth

    return synth.load_regression(options)


LOADERS: dict[str, Callable[[DatasetOptions], Dataset]] = {
    "synth": load_synth,
    "synth-reg": load_synth_regression,
    "cremad": cremad.load,
    "ks": ks.load,
    "ave": ave.load,
    "ucf101": ucf101.load,
    "mosi": mmsa.load_mosi,
    "mosei": mmsa.load_mosei,
}


def load_dataset(name: str, options: DatasetOptions) -> Dataset:
    """Find the samples of dataset ``name``; a ConfigError names the known datasets."""
    if options.target is not None and options.target not in TARGETS:
        raise ConfigError(f"--target: must be one of {', '.join(TARGETS)}, not {options.target!r}")
    if name in LOADERS:
        if options.manifest is not None:
            raise ConfigError(
                f"'{name}' is a built-in dataset; give a --manifest dataset a new name"
            )
        if options.target is not None:
            raise ConfigError(f"--target is for --manifest datasets; '{name}' has its own target")
        return LOADERS[name](options)
    if options.manifest is None:
        raise ConfigError(
            f"unknown dataset '{name}': known datasets are {', '.join(LOADERS)}; "
            "for your own data pass --manifest FILE.csv"
        )
    if not is_folder_name(name):
        raise ConfigError(
            f"dataset name '{name}' must be letters, digits, '_', '.' or '-' (it names folders)"
        )
    return manifest.load(options, name)


def skipped_samples(dataset: Dataset) -> tuple[Skipped, ...]:
    """The (id, reason) pairs of the clips a loader found but left out."""
    return dataset.skipped if isinstance(dataset, LoadedDataset) else ()


__all__ = ["LOADERS", "LoadedDataset", "Skipped", "load_dataset", "skipped_samples"]
