"""LoRA fine-tunes whose prior is free: the base is the LoRA with its adapter off.

- ``mixed``: per-sample adapters (on / off) in one forward, through peft's ``adapter_names``;
- ``free_prior``: :class:`FreePriorDenoiser` (Eq. 7 in one batched forward) and :class:`BasePrior`;
The DiT design and its files live with the DiT family (``priorswap.toolkit.dit.lora``, ``dit.lora_files``).
"""

from .free_prior import BasePrior, FreePriorDenoiser
from .mixed import BASE, check_mixable, mixing_problem, per_sample_adapters

__all__ = ["BASE", "BasePrior", "FreePriorDenoiser", "check_mixable", "mixing_problem", "per_sample_adapters"]
