"""The free prior: Eq. 7 from one copy of the weights, when the fine-tune is a LoRA of the base.

eps = eps_base(x, null) + g * (eps_lora(x, c) - eps_base(x, null)), and eps_base is eps_lora with the adapter
off. :class:`FreePriorDenoiser` evaluates both in one batched forward of 2B samples, B with the adapter on
and B with it off, so the swap costs what vanilla CFG costs. Guidance stays a pure function: this denoiser
simply answers ``cond=None`` with the base's unconditional eps (blended with its own by the prior mix).
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from ..core.denoisers import ModelDenoiser
from ..core.guidance import mix_prior
from ..errors import PriorswapError
from .mixed import BASE, active_adapter, check_mixable, per_sample_adapters


def _network(model: ModelDenoiser):
    mods = model.modules()
    if len(mods) != 1:
        raise PriorswapError(f"{model.name}: a free prior needs a denoiser that runs one network")
    return mods[0]


class FreePriorDenoiser:
    """A LoRA denoiser whose null condition is its base's: ``predict(x, t, [c, None])`` returns
    [eps_lora(x, c), lam * eps_base(x, null) + (1 - lam) * eps_lora(x, null)] from one forward.

    With ``prior_mix`` = 1 (the paper's swap) the batch is [B adapter on, B adapter off]; otherwise the LoRA's
    own null joins it (3B). Every other attribute is the wrapped denoiser's. ``base_null``: the base's null
    condition where it is not the model's (see :class:`BasePrior`).
    """

    def __init__(self, model: ModelDenoiser, prior_mix: float = 1.0, base_null: Any = None):
        self.model, self.prior_mix, self.base_null = model, float(prior_mix), base_null
        self.network = _network(model)
        check_mixable(self.network, model.name)
        self.adapter = active_adapter(self.network)

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "network"):  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.model, name)

    def predict(self, x_t: Tensor, t: Tensor, conds: Sequence[Any]) -> list[Tensor]:
        lam, b = self.prior_mix, x_t.shape[0]
        plan: list[tuple[Any, str]] = []  # (condition, adapter) per chunk of B samples
        for c in conds:
            if c is None:
                plan.append((self.base_null, BASE))
                if lam != 1.0:
                    plan.append((None, self.adapter))
            else:
                plan.append((c, self.adapter))
        names = [name for _, name in plan for _ in range(b)]  # (len(plan) * B,)
        with per_sample_adapters(self.network, names):
            outs = iter(self.model.predict(x_t, t, [c for c, _ in plan]))
        result = []
        for c in conds:
            if c is None:
                prior = next(outs)
                result.append(mix_prior(prior, next(outs), lam) if lam != 1.0 else prior)
            else:
                result.append(next(outs))
        return result

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        return self.predict(x_t, t, [cond])[0]


class BasePrior:
    """The base inside a LoRA fine-tune, used as a prior: ``sample(lora, labels, g, prior=BasePrior(lora))``.

    The sampler fuses it with the model (:meth:`fuse`) into one :class:`FreePriorDenoiser`, so no second model
    is loaded or run. Called on its own it is the base's denoiser (every sample adapter off). ``to`` moves
    nothing: its weights are the model's.

    ``null``: the base's own null condition (batch 1, in the model's condition format) where it differs from the
    model's. An SD LoRA that also adapts the text encoder has two empty-prompt embeddings: the LoRA's own (text
    LoRA on), which its vanilla CFG uses, and the base's (text LoRA off), which the swap must use. None: the
    model's null (a LoRA of the denoiser alone).
    """

    def __init__(self, model: ModelDenoiser, null: Any = None):
        self.model, self.null = model, null
        self.network = _network(model)
        check_mixable(self.network, model.name)
        self.name = f"the base inside {model.name} (adapter off)"

    @property
    def space(self):
        return self.model.space

    def size_problem(self, height: int, width: int) -> str | None:
        return self.model.size_problem(height, width)

    def fuse(self, model: Any, prior_mix: float) -> FreePriorDenoiser:
        """``model`` with this prior inside it: both CFG terms from one batched forward."""
        if _network(model) is not self.network:
            raise PriorswapError(
                f"{self.name} is the prior of its own LoRA only, not of {model.name}; load the base as --prior"
            )
        return FreePriorDenoiser(model, prior_mix, self.null)

    def predict(self, x_t: Tensor, t: Tensor, conds: Sequence[Any]) -> list[Tensor]:
        with per_sample_adapters(self.network, [BASE] * (len(conds) * x_t.shape[0])):
            return self.model.predict(x_t, t, [self.null if c is None else c for c in conds])

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        return self.predict(x_t, t, [cond])[0]

    def to(self, device=None, dtype=None) -> "BasePrior":
        return self

    @property
    def device(self):
        return self.model.device
