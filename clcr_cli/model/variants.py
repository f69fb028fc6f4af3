"""The registry of CLCR's ablation variants (the paper's Table 3 and the budget sweep)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VariantSpec:
    """Which parts of CLCR a variant keeps. ``full`` keeps everything."""

    description: str
    hierarchy: bool = True  # False: only the deepest level (encoder unchanged)
    controlled_exchange: bool = True  # False: dense exchange of full features (no split)
    sparse_budget: bool = True  # False: every valid token exchanges (alpha = 1)
    intercad: bool = True  # False: plain mean over levels and modalities
    cross_level_mix: bool = False  # True: modality i brings level (l + i) mod L to slot l
    intra_reg: bool = True
    inter_reg: bool = True


VARIANTS: dict[str, VariantSpec] = {
    "full": VariantSpec("CLCR as in the paper"),
    "no-hierarchy": VariantSpec("one level only (the deepest)", hierarchy=False),
    "no-intraced": VariantSpec(
        "dense exchange of full features, no shared/private split, no budget",
        controlled_exchange=False,
        sparse_budget=False,
    ),
    "no-intercad": VariantSpec("plain mean of levels and modalities", intercad=False),
    "full-mix": VariantSpec(
        "levels shuffled across modalities so every exchange crosses levels", cross_level_mix=True
    ),
    "no-reg": VariantSpec("without L_Intra and L_Inter", intra_reg=False, inter_reg=False),
    "no-intra-reg": VariantSpec("without L_Intra", intra_reg=False),
    "no-inter-reg": VariantSpec("without L_Inter", inter_reg=False),
    "dense-budget": VariantSpec(
        "all valid shared tokens exchange (alpha = 1)", sparse_budget=False
    ),
}
