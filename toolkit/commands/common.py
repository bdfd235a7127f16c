"""The flags every sampling command shares, declared once, and their checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import checks
from ..argspec import arg
from ..checks import SCHEDULERS


@dataclass(kw_only=True)
class SamplingOptions:
    """Prior, schedule, seeds and hardware of one sampling run (``priorswap sample <kind>``)."""

    prior: str | None = arg(
        None,
        help="base model (folder or hub id) whose unconditional eps replaces the "
        "fine-tune's (Eq. 7); 'base' with a DiT LoRA: its own base, in the same forward; omit for vanilla CFG",
    )
    prior_mix: float = arg(1.0, help="lambda in uncond = lam*eps_prior + (1-lam)*eps_ft (1 = the paper's swap)")
    steps: int = arg(50, help="sampling steps")
    seed: int = arg(0, help="sample i uses seed + i")
    scheduler: str = arg("ddim", choices=SCHEDULERS, help="sampler")
    batch_size: int = arg(8, help="samples per forward pass")
    device: str = arg("auto", help="cpu, cuda or cuda:N (auto: cuda when one is available)")
    dtype: Literal["fp32", "bf16", "fp16"] = arg("fp32", help="weights and activations (fp16 needs CUDA)")
    guidance_interval: tuple[float, float] | None = arg(
        None, metavar=("LO", "HI"), help="guide only for t/T in [LO, HI]"
    )
    rescale: float = arg(0.0, help="guidance rescale phi (0 = off)")
    progress: bool = arg(True, flag="--no-progress", help="hide progress bars")

    def check(self) -> None:
        """Cheap checks that fail before any model is loaded (the device check last: it may import torch)."""
        checks.at_least("--steps", self.steps)
        checks.check_scheduler(self.scheduler)
        checks.at_least("--batch-size", self.batch_size)
        checks.in_unit_interval("--prior-mix", self.prior_mix)
        checks.check_interval("--guidance-interval", self.guidance_interval)
        self.device = checks.resolve_device(self.device)
        checks.check_device(self.device, self.dtype)
        if not self.progress:
            hide_library_progress()

    def guidance(self, scale: float, guided_channels: int | None = None):
        """Single-condition CFG (Eq. 6/7) at ``scale`` with this run's prior mix, interval and rescale."""
        from ..core.sampling import Guidance

        return Guidance(
            scale=scale,
            prior_mix=self.prior_mix,
            guided_channels=guided_channels,
            interval=self.guidance_interval,
            rescale_phi=self.rescale,
        )

    def dual_guidance(self, image_scale: float, text_scale: float):
        """Dual CFG (Eq. 8/9) with gI = ``image_scale`` and gT = ``text_scale``."""
        from ..core.sampling import DualGuidance

        return DualGuidance(
            image_scale=image_scale,
            text_scale=text_scale,
            prior_mix=self.prior_mix,
            interval=self.guidance_interval,
            rescale_phi=self.rescale,
        )


def hide_library_progress() -> None:
    """Silence diffusers' and transformers' own progress bars (``--no-progress``)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
