"""How a pipeline's denoiser reads its timestep and what it predicts, and moving one model's step to another's.

DDPM pipelines (SD, SDXL, PixArt) index an alpha_bar table; the same x_t goes to a prior at the timestep whose
alpha_bar is nearest (``core.schedules``), and its prediction is converted through eps with each model's own
alpha_bar. Flow-matching pipelines (SD3) are called at t = sigma * num_train_timesteps and predict the velocity
x_1 - x_0: the same sigma is the same t, and a velocity needs no conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.loading import alphas_cumprod
from ..core.schedules import alpha_bar_at, from_eps, nearest_timestep, to_eps


@dataclass
class Timeline:
    flow: bool
    train_steps: int
    prediction_type: str  # epsilon / v_prediction / sample (DDPM); ignored for flow (velocity)
    table: Tensor | None  # alpha_bar per training timestep (DDPM only)

    @classmethod
    def of(cls, scheduler_config: dict, flow: bool) -> "Timeline":
        config = dict(scheduler_config)
        return cls(
            flow,
            int(config.get("num_train_timesteps", 1000)),
            str(config.get("prediction_type") or "epsilon"),
            None if flow else alphas_cumprod(config),
        )

    def fraction(self, t: Tensor) -> float:
        """t / T of the step (1 = pure noise), what ``--guidance-interval`` compares."""
        return float(t.flatten()[0]) / self.train_steps

    def alpha_bar(self, t: Tensor) -> Tensor:
        return alpha_bar_at(self.table, t.cpu()).to(t.device)


def map_timestep(model: Timeline, prior: Timeline, t: Tensor) -> Tensor:
    """The prior's timestep for the model's ``t`` (n rows): the same sigma (flow) or the nearest alpha_bar (DDPM)."""
    if model.flow:
        return t.float() * (prior.train_steps / model.train_steps)
    return nearest_timestep(prior.table, model.alpha_bar(t).cpu()).to(t.device)


def convert(out: Tensor, x: Tensor, model: Timeline, t: Tensor, prior: Timeline, t_prior: Tensor) -> Tensor:
    """The prior's prediction ``out`` (at ``t_prior``) as the model would have answered at ``t``."""
    if model.flow:
        return out
    eps = to_eps(out, x, prior.alpha_bar(t_prior), prior.prediction_type)
    return from_eps(eps, x, model.alpha_bar(t), model.prediction_type)
