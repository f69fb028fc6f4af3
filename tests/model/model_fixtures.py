"""Tiny configs and batches shared by the model tests (imported by name, no fixtures)."""

from __future__ import annotations

from dataclasses import replace

import torch

from clcr_cli.model import Batch, ModalitySpec, ModelConfig

TEXT = ModalitySpec("text", "levels", 12, num_levels_in=4)
AUDIO = ModalitySpec("audio", "sequence", 6)
VIDEO = ModalitySpec("video", "frames", 3)
STEPS = {"text": 7, "audio": 9, "video": 5}


def tiny_config(modalities=(TEXT, AUDIO, VIDEO), **overrides) -> ModelConfig:
    base = ModelConfig(
        modalities=tuple(modalities),
        task="classification",
        num_classes=3,
        d=16,
        num_levels=3,
        num_heads=2,
        shared_dim=8,
        private_dim=6,
        dropout=0.0,
        max_len=32,
        frame_channels=(4, 4, 8),
    )
    return replace(base, **overrides)


def tiny_batch(config: ModelConfig, size: int = 4, seed: int = 0, extra_steps: int = 0) -> Batch:
    """Random inputs with varied lengths; ``extra_steps`` appends random padding only."""
    gen = torch.Generator().manual_seed(seed)
    inputs, lengths = {}, {}
    for spec in config.modalities:
        steps = STEPS[spec.name]
        if spec.kind == "levels":
            x = torch.randn(size, spec.num_levels_in, steps + extra_steps, spec.dim, generator=gen)
        elif spec.kind == "sequence":
            x = torch.randn(size, steps + extra_steps, spec.dim, generator=gen)
        else:
            x = torch.randint(
                0, 256, (size, steps + extra_steps, 8, 8, spec.dim), generator=gen
            ).to(torch.uint8)
        inputs[spec.name] = x
        lengths[spec.name] = torch.tensor([steps - (i % 3) for i in range(size)])
    if config.task == "classification":
        target = torch.randint(0, config.num_classes, (size,), generator=gen)
    else:
        target = torch.randn(size, generator=gen)
    return Batch(inputs=inputs, lengths=lengths, target=target)
