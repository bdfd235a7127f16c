"""LightningModule that fine-tunes a text-to-image model: SD1.x/2.x, SDXL, SD3/SD3.5, PixArt-alpha/Sigma.

The objective is the one each model was trained with (``t2i_loss.py``); captions are encoded by the pipeline's own
``encode_prompt`` (``t2i_text.py``); a LoRA (``t2i_export.py``) or every denoiser weight trains, with an EMA copy
that export uses. All randomness of a step (caption dropout, latent draws, timesteps, noise) comes from a generator
seeded by (seed, global step, rank), so a resumed run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from torch.optim.swa_utils import AveragedModel

from ..errors import PriorswapError
from .fine_tune import FineTune, check_rate, ema_update
from .lora import AdapterEMA
from .t2i_export import T2ILoRA, add_lora, export_lora, export_pipeline
from .t2i_loss import (
    check_loss_options,
    ddpm_loss,
    ddpm_noising,
    flow_density,
    flow_loss,
    flow_noising,
    min_snr_weights,
    offset_noise,
    predict,
    reduce_loss,
    sdxl_time_ids,
)
from .t2i_text import encode, encode_null, family_encoders, load_pipeline, read_family


class T2IFineTune(FineTune):
    """Fine-tune a text-to-image diffusers pipeline on captioned images.

    Batches are the captioned datamodules' ({"pixels", "caption", "original_size", "crop_top_left", "index"}) or,
    with a cache (``text_cache.py``), cached rows (latents and caption conditions instead of pixels and captions).
    A DreamBooth batch with prior preservation also holds "prior" (B,): True on its class rows.

    Args:
        pretrained: diffusers text-to-image pipeline folder or hub id (SD1.x/2.x, SDXL, SD3/SD3.5, PixArt-alpha/Sigma).
        lora: train a LoRA (rank, alpha, targets, text_encoders) instead of every denoiser weight.
        caption_dropout: probability of replacing a sample's caption by the null caption (the pipeline's own
            unconditional condition), so classifier-free guidance keeps working. 0: the null caption is never
            trained, and the fine-tune's unconditional branch stays the base model's.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        ema_decay: decay of the EMA weights used for export.
        max_sequence_length: T5 tokens (SD3, PixArt); default the pipeline's (SD3 256, PixArt-alpha 120, Sigma 300).
        weighting_scheme: SD3 timestep density and loss weighting (logit_normal, mode, cosmap, sigma_sqrt, none).
        logit_mean: SD3 logit-normal mean.
        logit_std: SD3 logit-normal standard deviation.
        mode_scale: SD3 ``mode`` scheme scale.
        precondition_outputs: SD3: train on x_0 = pred * (-sigma) + x_t against x_0 (diffusers' script's default).
        snr_gamma: Min-SNR-gamma loss weighting (Hang et al. 2023; 5.0 is the paper's recommendation): each
            sample's MSE is weighted by min(SNR, gamma) / SNR (eps prediction) or min(SNR, gamma) / (SNR + 1)
            (v prediction), as diffusers' train_text_to_image.py --snr_gamma. None: plain MSE. SD/SDXL/PixArt only;
            SD3 weights its flow loss by weighting_scheme instead.
        noise_offset: offset noise scale: the training noise gets noise_offset * N(0, 1) per sample and channel
            added (constant over the image), as diffusers' --noise_offset (e.g. 0.05-0.1), so the model can learn
            very dark or bright images. 0: off. SD/SDXL/PixArt only.
        prior_loss_weight: DreamBooth prior preservation (the datamodule's class_data_dir and class_prompt): the
            loss is the instance images' loss plus this times the class images' loss. Used only when batches
            hold class rows.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        compile: torch.compile the denoiser.
        export_dir: folder of the export (a pipeline folder, or a LoRA folder); default <run folder>/export.
        export_on_fit_end: export the EMA weights when fit ends.
        seed: seed of the per-step randomness; linked from seed_everything.
    """

    def __init__(
        self,
        pretrained: str,
        lora: T2ILoRA | None = None,
        caption_dropout: float = 0.1,
        lr: float = 1e-5,
        weight_decay: float = 1e-2,
        ema_decay: float = 0.9999,
        max_sequence_length: int | None = None,
        weighting_scheme: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        mode_scale: float = 1.29,
        precondition_outputs: bool = True,
        snr_gamma: float | None = None,
        noise_offset: float = 0.0,
        prior_loss_weight: float = 1.0,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        export_dir: str | None = None,
        export_on_fit_end: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        check_rate("caption_dropout", caption_dropout)
        check_rate("ema_decay", ema_decay)
        check_loss_options(read_family(pretrained)[2], snr_gamma, noise_offset, prior_loss_weight)
        self.save_hyperparameters()
        if isinstance(lora, T2ILoRA):  # plain values in checkpoints (they are read weights-only)
            self.hparams["lora"] = dataclasses.asdict(lora)
        self.strict_loading = False  # frozen parts (VAE, text encoders, a LoRA's base) are re-read from pretrained
        self.family, self.pipe = load_pipeline(pretrained)
        if lora and lora.text_encoders and not self.family.text_encoders:
            raise PriorswapError(f"model.lora.text_encoders: {self.family.name} has no CLIP text encoder LoRA to train")
        self.net = getattr(self.pipe, self.family.net)
        self.vae = self.pipe.vae
        self.encoder_names = family_encoders(self.pipe)
        for name in self.encoder_names:
            setattr(self, name, getattr(self.pipe, name))
        cfg = dict(self.pipe.scheduler.config)
        self.flow = self.family.name == "sd3"
        self.scheduler = (FlowMatchEulerDiscreteScheduler if self.flow else DDPMScheduler).from_config(cfg)
        self.trained = ["net"]
        if lora:
            add_lora(self.net, lora, self.family, seed)
            for i, name in enumerate(self.family.text_encoders if lora.text_encoders else ()):
                add_lora(getattr(self, name), lora, self.family, seed + 1 + i, text_encoder=True)
                self.trained.append(name)
        else:
            self.net.requires_grad_(True)
        self.net.train()  # loaded in eval mode; the frozen parts stay there (train() below)
        if gradient_checkpointing:
            self.net.enable_gradient_checkpointing()
        trained = self.trained_nets()
        avg = ema_update(ema_decay)
        self.ema = AdapterEMA(trained, avg) if lora else AveragedModel(trained, multi_avg_fn=avg, use_buffers=True)
        self.ema.requires_grad_(False)
        if compile:
            self.net.compile()
        self._null: dict[str, torch.Tensor] | None = None

    @property
    def lora(self) -> T2ILoRA | None:
        spec = self.hparams.get("lora")
        return T2ILoRA(**spec) if isinstance(spec, dict) else spec

    def trained_nets(self) -> torch.nn.ModuleDict:
        """What trains, by name ("net", and text encoders with a text-encoder LoRA): what the EMA follows."""
        return torch.nn.ModuleDict({n: getattr(self, n) for n in self.trained})

    def train(self, mode: bool = True):
        """The VAE and text encoders stay in eval mode (T5's dropout would make the conditions random)."""
        super().train(mode)
        for name in ("vae", *self.encoder_names):
            getattr(self, name).eval()
        return self

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Build (or reuse) the datamodule's latent + caption cache when it offers one (each rank its chunks)."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or getattr(dm, "t2i_cache", None) is None:
            return
        if len(self.trained) > 1:
            raise PriorswapError(
                "data.t2i_cache caches caption embeddings, but model.lora.text_encoders trains the text encoders; unset one"
            )
        self.to(self.device)
        dm.build_t2i_cache(self.encode_items, encoder_id=self.cache_identity())

    def cache_identity(self) -> str:
        """The model and encoder identity a cache is keyed by (with the sequence length that shapes the embeddings)."""
        parts = [str(self.hparams.pretrained), type(self.vae).__name__, str(self.hparams.max_sequence_length)]
        parts += [f"{n}={type(getattr(self, n)).__name__}" for n in self.encoder_names]
        return "|".join(parts)

    @torch.no_grad()
    def encode_items(self, batch: dict) -> dict[str, torch.Tensor]:
        """Cache rows of a collated batch: unscaled latent distribution and the caption's condition."""
        dist = self.vae.encode(batch["pixels"].to(self.device, self.vae.dtype)).latent_dist
        rows = encode(self.family, self.pipe, batch["caption"], self.device, self.hparams.max_sequence_length)
        return {"latent_mean": dist.mean, "latent_std": dist.std, **rows}

    def configure_optimizers(self):
        params = [p for p in self.trained_nets().parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- one step -------------------------------------------------------------------------------
    def draws(self, batch: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Every random number of one step, in a fixed order: latent draw, caption dropout, timesteps, noise, and
        with ``noise_offset`` the (B, C, 1, 1) offset draw."""
        if "latent_mean" in batch:
            b, shape = batch["latent_mean"].shape[0], batch["latent_mean"].shape
        else:
            b, (h, w) = batch["pixels"].shape[0], batch["pixels"].shape[-2:]
            f = 2 ** (len(self.vae.config.block_out_channels) - 1)
            shape = (b, int(self.vae.config.latent_channels), h // f, w // f)
        out = {"latent_noise": torch.randn(shape, generator=gen)}
        p = self.hparams.caption_dropout if self.training else 0.0
        out["drop"] = torch.rand(b, generator=gen) < p
        if self.flow:
            h = self.hparams
            out["u"] = flow_density(b, gen, h.weighting_scheme, h.logit_mean, h.logit_std, h.mode_scale)
        else:
            out["t"] = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=gen)
        out["noise"] = torch.randn(shape, generator=gen)
        if self.hparams.noise_offset:  # drawn last and only when on, so runs without it keep their draws
            out["noise_offset"] = torch.randn(shape[:2] + (1, 1), generator=gen)
        return out

    def to_x0(self, batch: dict, latent_noise: torch.Tensor) -> torch.Tensor:
        """Scaled latents x_0 = (z - shift) * scale, z drawn from the (cached or fresh) VAE posterior."""
        if "latent_mean" in batch:
            mean, std = batch["latent_mean"], batch["latent_std"]
        else:
            with torch.no_grad():
                dist = self.vae.encode(batch["pixels"].to(self.device, self.vae.dtype)).latent_dist
            mean, std = dist.mean.float(), dist.std.float()
        z = mean + std * latent_noise.to(mean.device)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (z - shift) * float(self.vae.config.scaling_factor)

    def null_condition(self) -> dict[str, torch.Tensor]:
        """The null caption's condition: computed once while the text encoders are frozen, every step otherwise."""
        if self._null is not None and len(self.trained) == 1:
            return self._null
        with torch.set_grad_enabled(len(self.trained) > 1 and torch.is_grad_enabled()):
            null = encode_null(self.family, self.pipe, self.device, self.hparams.max_sequence_length)
        self._null = null if len(self.trained) == 1 else None
        return null

    def conditions(self, batch: dict, drop: torch.Tensor, image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        if "prompt_embeds" in batch:
            cond = {k: batch[k] for k in self.family.cond_keys}
        else:
            with torch.set_grad_enabled(len(self.trained) > 1 and torch.is_grad_enabled()):
                cond = encode(self.family, self.pipe, batch["caption"], self.device, self.hparams.max_sequence_length)
        if drop.any():
            null, keep = self.null_condition(), ~drop.to(self.device)
            cond = {k: torch.where(keep.view(-1, *[1] * (v.ndim - 1)), v, null[k].to(v.dtype)) for k, v in cond.items()}
        if self.family.name == "sdxl":
            cond["time_ids"] = sdxl_time_ids(batch["original_size"], batch["crop_top_left"], image_size).to(self.device)
        return cond

    def diffusion_loss(self, batch: dict, salt: int = 0, draws: dict | None = None) -> torch.Tensor:
        """The family's training loss on one batch; ``draws`` (see :meth:`draws`) replaces the step's own."""
        d = draws if draws is not None else self.draws(batch, self._generator(salt))
        x0 = self.to_x0(batch, d["latent_noise"])
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        image_size = (x0.shape[-2] * f, x0.shape[-1] * f)
        cond = self.conditions(batch, d["drop"], image_size)
        noise = d["noise"].to(x0.device, x0.dtype)
        if "noise_offset" in d:
            noise = offset_noise(noise, d["noise_offset"], self.hparams.noise_offset)
        h, prior = self.hparams, batch.get("prior")
        if self.flow:
            idx = (d["u"] * self.scheduler.config.num_train_timesteps).long()
            t, sigmas = self.scheduler.timesteps[idx].to(x0.device), self.scheduler.sigmas[idx].to(x0.device)
            x_t = flow_noising(x0, noise, sigmas)
            pred = predict(self.family, self.net, x_t, t, cond, image_size)
            per_sample = flow_loss(pred, x0, noise, x_t, sigmas, h.weighting_scheme, h.precondition_outputs)
            return reduce_loss(per_sample, prior, h.prior_loss_weight)
        t = d["t"].to(x0.device)
        x_t, target = ddpm_noising(self.scheduler, x0, noise, t)
        # Min-SNR weights every row, class rows too, as diffusers' SD3 DreamBooth script applies its loss weighting
        # to both halves (its SDXL one weights the instance half only, with another v formula; the weights here are
        # train_text_to_image.py's)
        weights = None if h.snr_gamma is None else min_snr_weights(self.scheduler, t, h.snr_gamma)
        per_sample = ddpm_loss(predict(self.family, self.net, x_t, t, cond, image_size), target, weights)
        return reduce_loss(per_sample, prior, h.prior_loss_weight)

    def training_step(self, batch: dict | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every image of the batch was unreadable (reported by the datamodule)
            return None
        loss = self.diffusion_loss(batch)
        self.log("loss", loss.detach(), prog_bar=True, batch_size=len(batch["index"]))
        return loss

    def validation_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is not None:
            loss = self.diffusion_loss(batch, salt=1 + batch_idx)
            self.log("val/loss", loss, batch_size=len(batch["index"]), sync_dist=True)

    def optimizer_step(self, *args, **kwargs) -> None:
        """Step, then update the EMA inside the step so that a checkpoint taken at this step includes it."""
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.trained_nets())

    # -- checkpoints and export -----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Only what trains (and its EMA): the frozen parts are the pretrained pipeline's, re-read on resume."""
        names = {n for n, p in self.trained_nets().named_parameters() if p.requires_grad}
        full = self.lora is None
        checkpoint["state_dict"] = {
            k: v
            for k, v in checkpoint["state_dict"].items()
            if k in names
            or (full and k.startswith(("net.", "ema.")))
            or (k.startswith("ema.module.") and k[len("ema.module.") :] in names)
            or k == "ema.n_averaged"
        }

    def on_fit_end(self) -> None:
        if self.hparams.export_on_fit_end and self.trainer.is_global_zero:
            print(f"priorswap: exported the EMA fine-tune to {self.export(self.default_export_dir())}")

    def export(self, path: str) -> str:
        """The EMA weights as a diffusers pipeline folder (full fine-tune) or the pipeline class's LoRA file."""
        ema = self.ema.module
        if self.lora is not None:
            return export_lora(self.pipe, self.family, {n: ema[n] for n in self.trained}, path)
        return export_pipeline(self.pipe, self.family, ema["net"], path)
