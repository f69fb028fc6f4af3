"""Text extraction: tokens/s of ``TextLevelEncoder.encode`` against a bare transformers forward.

Both sides run the same model (the extract stage's default, MiniLM-L6) on the same
texts (``synth`` transcripts) in the same batches (``text_batch``, ``text_max_len``).
The reference is the limit: the batches are tokenised before the clock starts and
only ``model(**tokens, output_hidden_states=True)`` is timed, so the ratio is what
tokenising, stacking the levels, masking and copying into the padded array cost.
Tokens are the real (non-padding) tokens, [CLS] and [SEP] included.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.common import Figure, Result, best_of, cost_figures, synth_dataset

BASE_SAMPLES = 64
REPEATS = 3


def run(n_samples: int, workdir: Path, size: str = "small", repeats: int = REPEATS) -> Result:
    from transformers import AutoModel
    from transformers.utils import logging

    from clcr_cli.config import extract_config
    from clcr_cli.features.text import TextLevelEncoder, resolve_text_model
    from clcr_cli.runtime import resolve_device

    cfg = extract_config({}, {"dataset": "synth"})
    texts = [s.text for s in synth_dataset(workdir, max(n_samples, 10)).samples[:n_samples]]
    device = resolve_device("auto")
    encoder = TextLevelEncoder(
        cfg.text_model, cfg.text_layers, cfg.text_max_len, device, cfg.text_batch
    )
    logging.disable_progress_bar()  # transformers' weight-loading bar would cut the table's log
    bare_model = AutoModel.from_pretrained(resolve_text_model(cfg.text_model), local_files_only=True)
    bare_model.to(device).eval()
    batches = [
        encoder.tokenizer(
            texts[i : i + cfg.text_batch],
            padding=True,
            truncation=True,
            max_length=cfg.text_max_len,
            return_tensors="pt",
        ).to(device)
        for i in range(0, len(texts), cfg.text_batch)
    ]
    tokens = int(sum(int(b["attention_mask"].sum()) for b in batches))

    @torch.inference_mode()
    def bare_forward() -> None:
        for batch in batches:
            bare_model(**batch, output_hidden_states=True)

    def clcr_encode() -> None:
        _, lengths = encoder.encode(texts)
        if int(lengths.sum()) != tokens:
            raise AssertionError(f"encode counted {int(lengths.sum())} tokens, the tokenizer {tokens}")

    measured = best_of({"clcr encode": clcr_encode, "bare forward": bare_forward}, repeats)
    rate = Figure(
        "clcr encode tokens/s",
        tokens / measured["clcr encode"].seconds,
        "bare forward tokens/s",
        tokens / measured["bare forward"].seconds,
        "tok/s",
    )
    return Result(
        "text",
        size,
        {"samples": n_samples, "tokens": tokens, "batches": len(batches)},
        [rate, *cost_figures(measured, "clcr encode", "bare forward")],
        {"model": encoder.info["model"], "layers": list(encoder.layers), "device": device},
    )
