"""``priorswap eval t2i``: a text-to-image fine-tune or LoRA over a prompt set, vanilla CFG against each prior.

    priorswap eval t2i --model stabilityai/stable-diffusion-xl-base-1.0 --lora my_lora/ --priors base \
        --prompts captions_val2014.json --limit 5000 --reference coco_val2014/ --guidance-scale 5 7.5 --output-dir out

Writes out/eval.md (one row per method and scale), eval.csv, items.csv (per sample), grid.png and
samples/<method>/<scale>/. A killed run resumes; ``--shard K/N`` splits the sampling, and under ``torchrun`` or
``srun`` each process samples its rank's share and rank 0 scores. The flags are the fields of
:class:`~priorswap.toolkit.protocols.t2i_settings.T2IEvalRun`; the run is ``protocols.t2i_eval``.
"""

from __future__ import annotations

import sys

from ..argspec import Command
from ..protocols.t2i_settings import T2IEvalRun


def reference_warning(n: int, dim: int, metric: str) -> str:
    """The DiT evaluation's reference-count warning, as one line on stderr (before any sampling)."""
    import warnings

    from .eval_checks import reference_note

    with warnings.catch_warnings():  # printed once, as one line, rather than as a Python warning too
        warnings.simplefilter("ignore")
        _, warning = reference_note(n, dim, metric, "", source="--reference", hint="use more --reference images")
    if warning:
        print(f"priorswap: warning: {warning}", file=sys.stderr)
    return warning


def run(cfg: T2IEvalRun) -> int:
    from functools import partial

    from ..launch import shard_then_score
    from ..protocols.t2i_eval import evaluate_t2i

    if not cfg.progress:
        from .common import hide_library_progress

        hide_library_progress()
    shard_then_score(cfg, partial(evaluate_t2i, warn=reference_warning))
    return 0


COMMAND = Command(
    T2IEvalRun,
    run,
    "a text-to-image fine-tune or LoRA (SD, SDXL, SD3, PixArt) over a prompt set: CLIP score, FID, FD-DINOv2, "
    "CLIP-I / DINO, vanilla CFG against each prior",
)
