"""``--compile``: a torch.compile'd CLCR training step against the eager one (opt-in).

The model has the demo's settings (``clcr train --task synth``: d 64, 2 heads, batch 32) on
a batch of random inputs shaped like ``synth``'s features (BERT levels 3 x 31 x 384, log-mel
201 x 64, 16 RGB frames of 32 x 32). Figures: the steady forward + backward seconds of the
compiled model (fastest of ``REPEATS`` after compiling) against the eager model's, and the
seconds of the first compiled call (compiling included) against one eager step. Not in the
default set: compiling takes minutes on a CPU (``python -m bench --only compile``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.common import Figure, Result

BASE_SAMPLES = 32
REPEATS = 3


def synth_like_batch(size: int):
    """A batch of random inputs with synth's feature shapes, and the model config for it."""
    from clcr_cli.config import train_config
    from clcr_cli.model import Batch, ModalitySpec

    gen = torch.Generator().manual_seed(0)
    specs = (
        ModalitySpec("text", "levels", 384, num_levels_in=3, max_steps=31),
        ModalitySpec("audio", "sequence", 64, max_steps=201),
        ModalitySpec("video", "frames", 3, max_steps=16),
    )
    inputs = {
        "text": torch.randn(size, 3, 31, 384, generator=gen),
        "audio": torch.randn(size, 201, 64, generator=gen),
        "video": torch.randint(0, 256, (size, 16, 32, 32, 3), generator=gen, dtype=torch.uint8),
    }
    lengths = {m: torch.full((size,), x.shape[2 if m == "text" else 1]) for m, x in inputs.items()}
    target = torch.randint(0, 8, (size,), generator=gen)
    options = train_config({}, {"task": "synth"}).model
    config = options.__class__(**{**options.__dict__, "modalities": specs, "num_classes": 8})
    return Batch(inputs, lengths, target), config


def _step(model: torch.nn.Module, batch) -> float:
    t0 = time.perf_counter()
    model(batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def run(n_samples: int, workdir: Path, size: str = "small") -> Result:
    from clcr_cli.model import build_model

    batch, config = synth_like_batch(n_samples)
    torch.manual_seed(0)
    eager = build_model(config).train()
    _step(eager, batch)  # warm-up
    compiled = torch.compile(eager)
    first = _step(compiled, batch)
    steps = {"eager": [], "compiled": []}
    for _ in range(REPEATS):  # interleaved rounds: the same share of a noisy machine
        steps["eager"].append(_step(eager, batch))
        steps["compiled"].append(_step(compiled, batch))
    eager_step, compiled_step = min(steps["eager"]), min(steps["compiled"])
    return Result(
        "compile",
        size,
        {"batch": n_samples},
        [
            Figure("compiled step seconds", compiled_step, "eager step seconds", eager_step, "s"),
            Figure("first compiled call seconds", first, "eager step seconds", eager_step, "s"),
        ],
        {"torch": torch.__version__, "threads": torch.get_num_threads()},
    )
