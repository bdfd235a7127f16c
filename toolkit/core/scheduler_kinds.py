"""The samplers ``--scheduler`` offers, in one table: each name's diffusers scheduler class and what priorswap
sets on it. No torch or diffusers here, so argument checks and ``--help`` stay fast.

Denoisers always return eps, so ``prediction_type`` is forced to epsilon on every kind (in ``make_scheduler``);
DDIM/DDPM get ``clip_sample=False`` (latents are not in [-1, 1]; docs/method.md trap 10) and DDPM the fixed_small
variance, since the learned-sigma channels are dropped by the denoisers.
"""

from __future__ import annotations

SCHEDULER_KINDS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
    "ddpm": ("DDPMScheduler", {"clip_sample": False, "variance_type": "fixed_small"}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
}
SCHEDULERS = tuple(SCHEDULER_KINDS)  # the --scheduler names
