"""``resnet``: a training step of CLCR with the audio-visual peers' ResNet18 encoders.

CREMA-D-shaped inputs (issue 18): one 224-px frame (a view of a 256-px stored frame) and a
257 x 188 log-STFT per sample, batch 64, six classes.

- **step**: samples/s of a CLCR training step (forward, backward, SGD step, as ``clcr
  train`` builds them) with ``encoder = resnet18``, against the same two bare ResNet18s
  (``model/resnet.py``: a 3-channel one on the frames, a 1-channel one on the spectrogram,
  their pooled features summed into a linear head) forward + backward + step on the same
  batch: the limit CLCR can reach, since its own layers come on top (goal: >= 0.8x);
- **loader**: seconds per batch of the data loader alone (HDF5 read of a random store of
  such samples + RandomResizedCrop + flip, in 2 worker processes), against the step's:
  the loader must never be what the step waits for (ratio < 1).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from bench.common import Figure, Result, best_of

BASE_SAMPLES = 64  # one batch at small
BATCH = 64
SHAPES = {"audio": (188, 257), "video": (1, 256, 256, 3)}
VIEW = 224
CLASSES = 6
REPEATS = 2


class BareResNets(nn.Module):
    """The limit: the two peers' encoders and a linear head, nothing else."""

    def __init__(self) -> None:
        super().__init__()
        from clcr_cli.model.resnet import resnet18

        self.visual, self.audio = resnet18(3, None), resnet18(1, None)
        self.head = nn.Linear(512, CLASSES)

    def forward(self, frames: torch.Tensor, spectrogram: torch.Tensor) -> torch.Tensor:
        pixels = frames.flatten(0, 1).float().div(255).permute(0, 3, 1, 2)
        image = spectrogram.transpose(1, 2)[:, None]
        return self.head(self.visual(pixels.contiguous()) + self.audio(image.contiguous()))


def _step(optimizer: torch.optim.Optimizer, loss) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss().backward()
    optimizer.step()


def run(n_samples: int, workdir: Path, size: str = "small") -> Result:
    from bench.streaming import write_store
    from clcr_cli.model import ModalitySpec, ModelConfig, build_model
    from clcr_cli.model.batch import Batch
    from clcr_cli.store import FeatureStore
    from clcr_cli.training.data import FrameViews, StoreSplit, batches

    torch.manual_seed(0)
    b = BATCH
    frames = torch.randint(0, 256, (b, 1, VIEW, VIEW, 3), dtype=torch.uint8)
    spectrogram = torch.randn(b, *SHAPES["audio"])
    target = torch.randint(0, CLASSES, (b,))
    batch = Batch({"audio": spectrogram, "video": frames},
                  {"audio": torch.full((b,), SHAPES["audio"][0]), "video": torch.ones(b, dtype=torch.long)}, target)
    config = ModelConfig((ModalitySpec("audio", "sequence", SHAPES["audio"][1], 1, SHAPES["audio"][0]),
                          ModalitySpec("video", "frames", 3, 1, 1)), num_classes=CLASSES, encoder="resnet18")
    clcr, bare = build_model(config), BareResNets()
    sgd = {name: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
           for name, m in (("clcr", clcr), ("bare", bare))}
    clcr.train(), bare.train()
    loss_of = {"clcr": lambda: clcr(batch).loss,
               "bare": lambda: nn.functional.cross_entropy(bare(frames, spectrogram), target)}
    steps = best_of({name: lambda name=name: _step(sgd[name], loss_of[name]) for name in sgd}, REPEATS)

    store_path = write_store(Path(workdir) / "resnet-store", max(n_samples, b), SHAPES)
    with FeatureStore(store_path) as store:
        split = StoreSplit(store, store.split_indices("train"))
        views = FrameViews(VIEW, augment=True, seed=0, epoch=0)
        t0 = time.perf_counter()
        count = sum(1 for _ in batches(split, b, views=views, workers=2))
        loader = (time.perf_counter() - t0) / max(count, 1)
    figures = [
        Figure("clcr resnet18 samples/s", b / steps["clcr"].seconds, "two bare ResNet18s samples/s",
               b / steps["bare"].seconds, "samples/s"),
        Figure("loader seconds per batch (2 workers)", loader, "clcr step seconds", steps["clcr"].seconds, "s"),
    ]
    return Result("resnet", size, {"batch": b, "loader batches": count}, figures,
                  {"threads": torch.get_num_threads(), "frames": "1 x 224 px (from 256)", "audio": "188 x 257"})
