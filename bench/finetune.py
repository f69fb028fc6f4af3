"""BERT fine-tuning: training steps of ``clcr_cli.model.bert.BertModel`` against transformers'.

Both sides are MiniLM-L6 (the offline text model, 6 layers, width 384) with the same
weights (ours loaded from transformers' state dict by ``adapt_hf_state_dict``), in train
mode (HF's dropout), on the same batch: 16 token sequences padded to 50 (lengths spread
evenly over 20 .. 50, [CLS] ... [SEP], seeded random word pieces). One step is what
fine-tuning the text levels costs: forward with every hidden state
(``output_hidden_states=True`` on the transformers side), a loss on the levels 2, 4, 6
(the mean square of each, the same on both sides), ``zero_grad(set_to_none=True)``,
backward, ``torch.optim.AdamW`` step (lr 1e-5, each side its own optimiser, created and
stepped once in the warm-up so that its state is allocated before anything is measured).

Figures: samples/s of ours against transformers' (goal: ratio >= 0.8); the seconds and the
peak memory of the timed steps (CPU: peak RSS growth, ``VmHWM``; CUDA: peak
``torch.cuda.max_memory_allocated`` above the allocation at the start); and the peak
memory of ours with ``gradient_checkpointing`` against ours without. Each side runs once
untimed, then ``repeats`` interleaved rounds of ``steps`` steps; the fastest round of each
is kept, with its largest peak.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.common import Figure, Measured, Result, measure

BASE_SAMPLES = 2  # training steps per timed round at the small size (opt-in: --only finetune)
BATCH = 16
SEQ_LEN = 50
MIN_LEN = 20
LEVELS = (2, 4, 6)
LR = 1e-5
REPEATS = 3
CLS, SEP, FIRST_WORD_PIECE = 101, 102, 1996  # bert-base-uncased / MiniLM vocabulary


def token_batch(vocab_size: int, batch: int = BATCH, seq_len: int = SEQ_LEN, seed: int = 0):
    """``(input_ids, attention_mask, token_type_ids)``, ``(batch, seq_len)`` each: lengths
    evenly spread over ``MIN_LEN .. seq_len``, padded with id 0."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(min(MIN_LEN, seq_len), seq_len, batch).round().long()
    ids = torch.randint(FIRST_WORD_PIECE, vocab_size, (batch, seq_len), generator=g)
    positions = torch.arange(seq_len)[None]
    mask = (positions < lengths[:, None]).long()
    ids[:, 0] = CLS
    ids[torch.arange(batch), lengths - 1] = SEP
    ids = ids * mask
    return ids, mask, torch.zeros_like(ids)


def level_loss(states) -> torch.Tensor:
    return sum(states[i].square().mean() for i in LEVELS)


def _measure(fn: Callable[[], None], device: str) -> Measured:
    """Wall time of ``fn`` and its peak memory above the start (RSS on CPU, allocated
    CUDA memory on a GPU)."""
    if device != "cuda":
        return measure(fn)[1]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return Measured(seconds, (torch.cuda.max_memory_allocated() - start) / 2**20)


def run(n_steps: int, workdir: Path, size: str = "small", repeats: int = REPEATS,
        batch: int = BATCH, seq_len: int = SEQ_LEN, model_path: Path | None = None) -> Result:
    from transformers import AutoModel
    from transformers.utils import logging

    from clcr_cli.features.text import resolve_text_model
    from clcr_cli.model.bert import BertConfig, BertModel, adapt_hf_state_dict
    from clcr_cli.runtime import resolve_device

    device = resolve_device("auto")
    path = Path(model_path) if model_path is not None else resolve_text_model("minilm")
    logging.disable_progress_bar()  # the weight-loading bar, and the report of the
    verbosity = logging.get_verbosity()  # unused pooler, would cut the table's log
    logging.set_verbosity_error()
    try:
        hf = AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    finally:
        logging.set_verbosity(verbosity)
    hf = hf.float().to(device).train()
    config = BertConfig.from_hf(hf.config.to_dict())
    ours = BertModel(config).to(device)
    ours.load_state_dict(adapt_hf_state_dict(hf.state_dict(), ours), strict=True)
    ours.train()
    ids, mask, types = (t.to(device) for t in token_batch(config.vocab_size, batch, seq_len))

    def steps_of(model, forward) -> Callable[[], None]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR)

        def steps() -> None:
            for _ in range(n_steps):
                optimizer.zero_grad(set_to_none=True)
                level_loss(forward(model)).backward()
                optimizer.step()

        return steps

    def hf_forward(model):
        return model(input_ids=ids, attention_mask=mask, token_type_ids=types,
                     output_hidden_states=True).hidden_states

    def our_forward(model):
        return model(ids, mask, types)

    def our_checkpointed(model):
        model.gradient_checkpointing = True
        try:
            return model(ids, mask, types)
        finally:
            model.gradient_checkpointing = False

    fns = {
        "clcr bert": steps_of(ours, our_forward),
        "transformers": steps_of(hf, hf_forward),
        "clcr bert checkpointed": steps_of(ours, our_checkpointed),
    }
    for fn in fns.values():  # warm-up: optimiser state, first-call allocations
        fn()
    rounds: dict[str, list[Measured]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            rounds[name].append(_measure(fn, device))
    best = {name: Measured(min(m.seconds for m in ms), max(m.peak_mib for m in ms))
            for name, ms in rounds.items()}

    samples = n_steps * batch
    a, b, c = best["clcr bert"], best["transformers"], best["clcr bert checkpointed"]
    memory = "CUDA allocated" if device == "cuda" else "RSS"
    figures = [
        Figure("clcr bert samples/s", samples / a.seconds, "transformers samples/s",
               samples / b.seconds, "samples/s"),
        Figure("clcr bert steps seconds", a.seconds, "transformers steps seconds", b.seconds,
               "s", grows=True),
        Figure(f"clcr bert peak {memory}", a.peak_mib, f"transformers peak {memory}", b.peak_mib,
               "MiB", grows=True),
        Figure(f"checkpointed peak {memory}", c.peak_mib, f"clcr bert peak {memory}", a.peak_mib,
               "MiB"),
        Figure("checkpointed samples/s", samples / c.seconds, "clcr bert samples/s",
               samples / a.seconds, "samples/s"),
    ]
    return Result(
        "finetune",
        size,
        {"steps": n_steps, "batch": batch, "tokens per sample": seq_len,
         "real tokens": int(mask.sum())},
        figures,
        {"model": str(path), "device": device, "layers": config.num_hidden_layers,
         "hidden": config.hidden_size, "levels": list(LEVELS), "optimizer": f"AdamW lr {LR}",
         "hf attention": getattr(hf.config, "_attn_implementation", None),
         "torch threads": torch.get_num_threads()},
    )
