"""The prior swap as a diffusers guider, for users of diffusers' modular pipelines (SDXL, SD3, ...).

Eq. 7: pred = u + g * (pred_ft(x, c) - u) with u = lam * pred_prior(x, null) + (1 - lam) * pred_ft(x, null).
A modular pipeline's denoise step calls, per step: ``set_state``, ``prepare_inputs`` (one batch per prediction),
then for each batch ``prepare_models(denoiser)``, the denoiser, ``cleanup_models(denoiser)``, and finally the
guider on all predictions. :class:`PriorSwapGuidance` asks for the conditional batch, the prior's batch and
(when 0 < lam < 1) the model's own unconditional batch, and makes the denoiser answer the prior's batch as the prior
only between its ``prepare_models`` and ``cleanup_models``:

- ``prior="lora-base"``: the prior is the LoRA'd denoiser with its adapters switched off;
- ``prior="module"``: the denoiser's forward is routed to ``prior_module`` (a diffusers hook, as the layer-skip
  guiders install theirs), e.g. the SDXL base UNet for an SDXL fine-tune.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.guiders.guider_utils import BaseGuidance, GuiderOutput, rescale_noise_cfg
from diffusers.hooks import HookRegistry, ModelHook
from peft.tuners.tuners_utils import BaseTunerLayer

from ..core.guidance import mix_prior
from ..errors import PriorswapError

COND, PRIOR, UNCOND = "pred_cond", "pred_prior", "pred_uncond"  # the batches, in the order they run
MODES = ("lora-base", "module")
HOOK_NAME = "priorswap_prior"


class _RouteToPrior(ModelHook):
    """Answers the denoiser's call with the prior's (same call signature), for the one batch it is installed."""

    def __init__(self, prior: torch.nn.Module):
        super().__init__()
        self.prior = prior

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.prior(*args, **kwargs)


class PriorSwapGuidance(BaseGuidance):
    """Classifier-free guidance whose unconditional prediction comes from a prior (Eq. 7).

    Args:
        guidance_scale: g. 1 runs the conditional batch only, as ``ClassifierFreeGuidance`` does.
        prior_mix: lam in u = lam * prior + (1 - lam) * own. 1 is the paper's swap (2 batches); 0 is plain CFG
            (2 batches, the model's own unconditional); in between runs 3 batches.
        guidance_rescale: as ``ClassifierFreeGuidance`` (Lin et al. 2023), towards the conditional prediction.
        prior: ``"lora-base"`` (the denoiser's LoRA adapters off) or ``"module"`` (``prior_module`` answers);
            ``None`` picks ``"module"`` when ``prior_module`` is given, else ``"lora-base"``.
        start, stop: the fraction of steps in which to guide (outside it only the conditional batch runs).
        enabled: as every diffusers guider.
        prior_module: the prior denoiser for ``prior="module"``; it is called with the pipeline's denoiser
            arguments, so it must take the same ones (an SDXL UNet for an SDXL UNet, an SD3 transformer for one)
            and sit on the pipeline's device and dtype (the pipeline's offloading does not manage it).
        prior_inputs: the prior's own null condition, replacing the pipeline's negative inputs in the prior's batch
            only. Keys are the names the pipeline's denoise step gives the guider (SDXL: ``prompt_embeds``,
            ``text_embeds`` (pooled), ``time_ids``; SD3: ``encoder_hidden_states``, ``text_embeds``); a tensor with
            batch size 1 is repeated over the batch. Without it the prior gets the pipeline's negative inputs.

    ``save_pretrained`` stores the scale, mix, rescale, window and mode; ``prior_module`` and ``prior_inputs`` are
    not serialisable: after ``from_pretrained`` re-attach them with :meth:`attach_prior`.
    """

    _input_predictions = [COND, PRIOR, UNCOND]
    ignore_for_config = ["prior_module", "prior_inputs"]

    @register_to_config
    def __init__(
        self,
        guidance_scale: float = 7.5,
        prior_mix: float = 1.0,
        guidance_rescale: float = 0.0,
        prior: str | None = None,
        start: float = 0.0,
        stop: float = 1.0,
        enabled: bool = True,
        prior_module: torch.nn.Module | None = None,
        prior_inputs: dict[str, torch.Tensor] | None = None,
    ):
        super().__init__(start, stop, enabled)
        if not 0.0 <= prior_mix <= 1.0:
            raise PriorswapError(f"PriorSwapGuidance: prior_mix must lie in [0, 1], got {prior_mix}")
        mode = prior or ("module" if prior_module is not None else "lora-base")
        if mode not in MODES:
            raise PriorswapError(f"PriorSwapGuidance: unknown prior {mode!r}; choose one of {', '.join(MODES)}")
        if mode == "lora-base" and prior_module is not None:
            raise PriorswapError("PriorSwapGuidance: prior_module is given with prior='lora-base'; pass prior='module'")
        # the resolved mode, so a saved or copied (``new``) guider is the same kind; diffusers drops config values
        # listed as defaults when it copies, so take ``prior`` off that list
        defaults = [k for k in self.config.get("_use_default_values", []) if k != "prior"]
        self.register_to_config(prior=mode, _use_default_values=defaults)
        self.guidance_scale, self.prior_mix, self.guidance_rescale = guidance_scale, prior_mix, guidance_rescale
        self.prior = mode
        self.prior_module, self.prior_inputs = None, None
        self.attach_prior(prior_module, prior_inputs)
        self._undo: list = []  # what cleanup_models puts back (adapters to switch on, hooks to remove)

    # -- the prior ---------------------------------------------------------------------------------------------
    def attach_prior(
        self, prior_module: torch.nn.Module | None = None, prior_inputs: dict[str, torch.Tensor] | None = None
    ) -> PriorSwapGuidance:
        """Attach the parts a saved guider cannot hold: the prior denoiser (``prior="module"``) and its null inputs."""
        if prior_module is not None and self.prior != "module":
            raise PriorswapError("PriorSwapGuidance: a prior_module needs prior='module'")
        self.prior_module = prior_module
        self.prior_inputs = dict(prior_inputs) if prior_inputs else None
        return self

    def new(self, **kwargs) -> PriorSwapGuidance:
        """A copy with some settings changed (as every diffusers guider), keeping the attached prior."""
        copy = self.__class__.from_config(self.config, **kwargs)
        return copy.attach_prior(self.prior_module, self.prior_inputs)

    # -- the batches -------------------------------------------------------------------------------------------
    def _batches(self) -> list[str]:
        if not self._is_guiding():
            return [COND]
        if self.prior_mix == 0.0:
            return [COND, UNCOND]
        if self.prior_mix == 1.0:
            return [COND, PRIOR]
        return [COND, PRIOR, UNCOND]

    def _with_prior_inputs(self, batch: Any, names: set[str]) -> Any:
        """The prior's batch with its own null condition in place of the pipeline's negative inputs."""
        for key, value in (self.prior_inputs or {}).items():
            if key not in names:
                known = ", ".join(sorted(names)) or "none"
                raise PriorswapError(f"PriorSwapGuidance: prior_inputs has {key!r}; this pipeline's are {known}")
            old = getattr(batch, key, None)
            if isinstance(old, torch.Tensor):
                value = value.to(device=old.device, dtype=old.dtype)
                if value.shape[0] == 1 and old.shape[0] > 1:
                    value = value.expand(old.shape[0], *value.shape[1:])
            setattr(batch, key, value)
        return batch

    def prepare_inputs(self, data: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list:
        batches = []
        for name in self._batches():
            batch = self._prepare_batch(data, 0 if name == COND else 1, name)
            batches.append(self._with_prior_inputs(batch, set(data)) if name == PRIOR else batch)
        return batches

    def prepare_inputs_from_block_state(self, data: Any, input_fields: dict[str, str | tuple[str, str]]) -> list:
        batches = []
        for name in self._batches():
            batch = self._prepare_batch_from_block_state(input_fields, data, 0 if name == COND else 1, name)
            batches.append(self._with_prior_inputs(batch, set(input_fields)) if name == PRIOR else batch)
        return batches

    # -- the models --------------------------------------------------------------------------------------------
    def prepare_models(self, denoiser: torch.nn.Module) -> None:
        self._put_back()  # a batch that raised last time must not leave the prior switched in
        self._count_prepared += 1
        batches = self._batches()
        if self._count_prepared <= len(batches) and batches[self._count_prepared - 1] == PRIOR:
            if self.prior == "lora-base":
                self._adapters_off(denoiser)
            else:
                self._route_to_prior(denoiser)

    def cleanup_models(self, denoiser: torch.nn.Module) -> None:
        self._put_back()

    def _put_back(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _adapters_off(self, denoiser: torch.nn.Module) -> None:
        layers = [m for m in denoiser.modules() if isinstance(m, BaseTunerLayer) and not m.disable_adapters]
        if not layers:
            raise PriorswapError(
                "PriorSwapGuidance(prior='lora-base'): the denoiser has no LoRA adapter switched on, so there is no "
                "adapter-off base to swap in; load the LoRA first or pass prior_module=<the base denoiser>"
            )
        if any(m.merged for m in layers):
            raise PriorswapError(
                "PriorSwapGuidance(prior='lora-base'): the LoRA is fused into the weights, so its base cannot be "
                "switched back on; unfuse it or pass prior_module=<the base denoiser>"
            )
        # peft's enable_adapters(True) also marks adapter weights trainable; put the flags back as they were so
        # sampling in the middle of training (a validation callback) changes nothing.
        grads = [(p, p.requires_grad) for m in layers for p in m.parameters()]
        for m in layers:
            m.enable_adapters(False)

        def back_on() -> None:
            for m in layers:
                m.enable_adapters(True)
            for p, flag in grads:
                p.requires_grad_(flag)

        self._undo.append(back_on)

    def _route_to_prior(self, denoiser: torch.nn.Module) -> None:
        if self.prior_module is None:
            raise PriorswapError(
                "PriorSwapGuidance(prior='module'): no prior denoiser attached; call guider.attach_prior(<module>)"
            )
        if self.prior_module is denoiser:  # the model is its own prior: plain CFG, and no hook calling itself
            return
        registry = HookRegistry.check_if_exists_or_initialize(denoiser)
        registry.register_hook(_RouteToPrior(self.prior_module), HOOK_NAME)
        self._undo.append(lambda: registry.remove_hook(HOOK_NAME, recurse=False))

    # -- the guidance ------------------------------------------------------------------------------------------
    def forward(
        self, pred_cond: torch.Tensor, pred_prior: torch.Tensor | None = None, pred_uncond: torch.Tensor | None = None
    ) -> GuiderOutput:
        uncond = None
        if not self._is_guiding():
            pred = pred_cond
        else:
            uncond = pred_uncond if pred_prior is None else pred_prior
            if pred_prior is not None and pred_uncond is not None:
                uncond = mix_prior(pred_prior, pred_uncond, self.prior_mix)
            # the same arithmetic as ClassifierFreeGuidance, so lam = 0 reproduces it exactly
            pred = uncond + self.guidance_scale * (pred_cond - uncond)
        if self.guidance_rescale > 0.0:
            pred = rescale_noise_cfg(pred, pred_cond, self.guidance_rescale)
        return GuiderOutput(pred=pred, pred_cond=pred_cond, pred_uncond=uncond)

    @property
    def is_conditional(self) -> bool:
        return self._count_prepared == 1

    @property
    def num_conditions(self) -> int:
        return len(self._batches())

    def _is_guiding(self) -> bool:
        if not self._enabled or math.isclose(self.guidance_scale, 1.0):
            return False
        if self._num_inference_steps is None:
            return True
        first, last = int(self._start * self._num_inference_steps), int(self._stop * self._num_inference_steps)
        return first <= self._step < last
