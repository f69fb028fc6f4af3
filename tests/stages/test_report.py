"""The report's noise sections: named by what was swept, numbers rounded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clcr_cli.stages.report import noise_section


@pytest.mark.parametrize(
    ("noise", "title"),
    [
        ({"sigmas": [0.0, 0.5]}, "Gaussian noise on features"),
        ({"sigmas": [0.0, 0.5], "level": "raw"}, "noise on the raw signal"),
        ({"sigmas": [0.0, 0.5], "missing_rates": [0.0, 0.5]}, "missing modalities"),
    ],
)
def test_noise_section_names_its_sweep_and_rounds(tmp_path: Path, noise: dict, title: str):
    folder = tmp_path / "synth-abc"
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps({"stage": "noise", "params": {"base": {}, "noise": noise}}))
    (folder / "robustness.csv").write_text("model,modality,relative_robustness_acc\nclcr,all,0.8972222222222221\n")
    out = tmp_path / "report"
    out.mkdir()
    section = noise_section(folder, out)
    assert section.title == f"Noise robustness: {title}, synth-abc"
    assert section.tables == [(["model", "modality", "relative_robustness_acc"], [["clcr", "all", "0.8972"]])]
