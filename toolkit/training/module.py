"""LightningModule that fine-tunes (or trains from scratch) a diffusers DiT with CFG dropout.

Loss = eps-MSE + learned-variance VLB (DiT's objective), CFG dropout applied once per sample (docs/method.md
trap 2), AdamW with DiT's defaults, an EMA copy stored in the checkpoint and used for sampling and export.
All randomness of a step (timesteps, noise, dropout, latent draws) comes from a generator seeded by
(seed, global step, rank), so a resumed run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from diffusers import DDPMScheduler
from torch.optim.swa_utils import AveragedModel

from ..core.loading import latent_space
from ..dit.load import load_dit
from ..dit.lora import LoRASpec
from ..dit.models import build_dit, dit_scheduler_config
from ..errors import PriorswapError
from .diffusion_loss import DiffusionSchedule, vlb_bits
from .fine_tune import FineTune, check_rate, ema_update
from .label_table import disable_block_dropout, drop_labels
from .labels import label_strategy
from .vae import load_vae


class DiTFineTune(FineTune):
    """Fine-tune a pretrained DiT on new classes, or train one from random init (``pretrained: null``).

    Args:
        pretrained: DiT pipeline or transformer folder, or hub id, to start from; null trains from random init.
        vae: VAE folder or hub id for latent DiTs (a pipeline folder's vae/ works); null for pixel-space models.
        size: random-init architecture: tiny, S/2, B/2, L/2 or XL/2 (ignored with pretrained).
        hidden_size: random init: width, overriding the size's.
        num_layers: random init: transformer blocks, overriding the size's.
        num_heads: random init: attention heads, overriding the size's.
        patch_size: random init: patch size, overriding the size's /N.
        in_channels: random init: channels of the model's input (4 for SD-VAE latents, 1 or 3 for pixels).
        sample_size: random init: input side in latent (or pixel) units.
        learned_sigma: random init: also predict the variance (DiT's choice; trained by the VLB term).
        num_classes: classes of the new label table; linked from the datamodule by ``priorswap fit``.
        class_names: names of those classes, stored with the model; linked from the datamodule.
        cfg_dropout: probability of replacing a sample's label by the null class (classifier-free guidance).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up over this many steps (0: none).
        ema_decay: decay of the EMA weights used for evaluation and export.
        vlb_weight: weight of the learned-variance VLB term added to the eps MSE.
        lora: train a LoRA of the pretrained base (rank, alpha, targets, dropout) instead of all weights.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        compile: torch.compile the transformer.
        export_dir: folder of the exported EMA pipeline; default <run folder>/export.
        export_on_fit_end: export the EMA model as a diffusers folder when fit ends.
        seed: seed of the per-step randomness; linked from seed_everything.
    """

    def __init__(
        self,
        pretrained: str | None = "facebook/DiT-XL-2-256",
        vae: str | None = "stabilityai/sd-vae-ft-ema",
        size: str = "XL/2",
        hidden_size: int | None = None,
        num_layers: int | None = None,
        num_heads: int | None = None,
        patch_size: int | None = None,
        in_channels: int = 4,
        sample_size: int = 32,
        learned_sigma: bool = True,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        cfg_dropout: float = 0.1,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        ema_decay: float = 0.9999,
        vlb_weight: float = 1.0,
        lora: LoRASpec | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        export_dir: str | None = None,
        export_on_fit_end: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        check_rate("cfg_dropout", cfg_dropout)
        check_rate("ema_decay", ema_decay)
        if lora is not None and not pretrained:
            raise PriorswapError("model.lora needs a pretrained base (model.pretrained): a LoRA adapts a base model")
        self.save_hyperparameters()
        if isinstance(lora, LoRASpec):  # plain values in checkpoints (they are read weights-only)
            self.hparams["lora"] = dataclasses.asdict(lora)
        self.strict_loading = False  # the frozen VAE (and a LoRA's frozen base) are not stored in checkpoints
        if pretrained:
            base = load_dit(pretrained, "pretrained")
            self.transformer = base.denoiser.transformer
            sched_cfg = base.scheduler_config
        else:
            base = None
            self.transformer = build_dit(
                size,
                num_classes or 1,
                in_channels,
                sample_size,
                patch_size=patch_size,
                learned_sigma=learned_sigma,
                hidden=hidden_size,
                layers=num_layers,
                heads=num_heads,
            )
            sched_cfg = dit_scheduler_config()
        # full label table or LoRA rows: every difference between the two lives in the strategy
        self.label_strategy = label_strategy(self.lora, pretrained, seed, base.denoiser if base else None)
        self.transformer.train().requires_grad_(True)
        disable_block_dropout(self.transformer)
        self.scheduler_config = {k: v for k, v in dict(sched_cfg).items() if not k.startswith("_")}

        self.schedule = DiffusionSchedule.from_betas(DDPMScheduler.from_config(self.scheduler_config).betas)
        self.vae = load_vae(vae) if vae else None
        self.ema: AveragedModel | None = None
        self.num_classes: int | None = None
        self.class_names = class_names
        self.latent_channels = int(self.transformer.config.in_channels)

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Build (or reuse) the datamodule's VAE latent cache when it asks for one (each rank its chunks)."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or getattr(dm, "latent_cache", None) is None:
            return
        if self.vae is None:
            raise PriorswapError(
                "data.latent_cache is set but the model has no VAE (model.vae is null); unset one of them"
            )
        vae, device = self.vae.to(self.device), self.device

        @torch.no_grad()
        def encode(pixels: torch.Tensor):
            dist = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist
            return dist.mean.float().cpu(), dist.std.float().cpu()

        vae_id = getattr(vae.config, "_name_or_path", "") or self.hparams.vae
        dm.build_latent_cache(encode, encoder_id=f"{vae_id}|{vae.dtype}")

    def configure_model(self) -> None:
        """Size the label table for ``num_classes`` (once), then create the EMA copy.

        ``priorswap fit`` links ``num_classes`` and ``class_names`` from the datamodule; in Python pass them:
        ``DiTFineTune(num_classes=dm.num_classes, class_names=dm.class_names)``.
        """
        if self.ema is not None:
            return
        k = self.hparams.num_classes
        if not k and self._trainer is None:
            return  # load_from_checkpoint: load_state_dict sizes the table from the weights
        if not k:
            raise PriorswapError(
                "num_classes is unknown: `priorswap fit` links it from the datamodule; in Python pass "
                "DiTFineTune(num_classes=dm.num_classes, class_names=dm.class_names)"
            )
        if self.class_names is not None and len(self.class_names) != k:
            raise PriorswapError(f"class_names has {len(self.class_names)} names but num_classes is {k}")
        self.class_names = self.class_names or [str(i) for i in range(k)]
        self._build(k)

    def _build(self, num_classes: int) -> None:
        self.transformer = self.label_strategy.build(self.transformer, num_classes)
        self.num_classes = num_classes
        if self.hparams.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.ema = self.label_strategy.ema(self.transformer, ema_update(self.hparams.ema_decay))
        if self.hparams.compile:
            self.transformer.compile()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Size the label table and EMA from the weights first (load_from_checkpoint, ddp_spawn results)."""
        k = self.label_strategy.table_size(state_dict)
        if self.ema is None and k is not None:
            self._build(k)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def lora(self) -> LoRASpec | None:
        spec = self.hparams.get("lora")
        return LoRASpec(**spec) if isinstance(spec, dict) else spec

    @property
    def null_id(self) -> int:
        """The null row: the fine-tune's own (N = num_classes), or for a LoRA the base's (its classes follow it)."""
        return self.label_strategy.null_id(self.num_classes)

    def class_ids(self, labels: torch.Tensor) -> torch.Tensor:
        """Dataset labels 0..K-1 -> label-table rows (a LoRA's classes sit after the base's null row)."""
        return self.label_strategy.class_ids(labels)

    def configure_optimizers(self):
        """AdamW (DiT: lr 1e-4, no weight decay), with an optional linear warm-up for from-scratch runs."""
        opt = torch.optim.AdamW(
            [p for p in self.transformer.parameters() if p.requires_grad],
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
        )
        if not self.hparams.warmup_steps:
            return opt
        warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / self.hparams.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": warm, "interval": "step"}}

    # -- data -> x0 -----------------------------------------------------------------------------
    def _randn(self, shape, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(self.device)

    def to_x0(self, batch: dict, gen: torch.Generator) -> torch.Tensor:
        """The clean training target x_0: scaled VAE latents (cached or encoded now) or pixels in [-1, 1]."""
        if "latent_mean" in batch:  # latent cache: draw a fresh latent each time
            mean, std = batch["latent_mean"], batch["latent_std"]
            x0 = mean + std * self._randn(mean.shape, gen)
            return x0 * self.vae_scaling_factor
        pixels = batch["pixels"]
        if self.vae is None:
            if pixels.shape[1] != self.latent_channels:
                raise PriorswapError(
                    f"pixel-space model has {self.latent_channels} input channels but images have {pixels.shape[1]}"
                )
            return pixels
        with torch.no_grad():
            dist = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
            x0 = dist.mean + dist.std * self._randn(dist.mean.shape, gen)
        return x0.float() * self.vae_scaling_factor

    @property
    def vae_scaling_factor(self) -> float:
        if self.vae is None:
            raise PriorswapError("the batch holds VAE latents but the model has no vae; set model.vae")
        return float(self.vae.config.scaling_factor)

    # -- loss -----------------------------------------------------------------------------------
    def diffusion_loss(self, batch: dict, salt: int = 0) -> dict[str, torch.Tensor]:
        """L_simple + vlb_weight * L_vlb on one batch, with CFG dropout (Ho & Salimans 2021, Alg. 1)."""
        gen = self._generator(salt)
        x0 = self.to_x0(batch, gen)  # (B, C, H, W)
        b = x0.shape[0]
        labels = drop_labels(
            self.class_ids(batch["label"]), self.null_id, self.hparams.cfg_dropout if self.training else 0.0, gen
        )
        t = torch.randint(0, self.schedule.num_timesteps, (b,), generator=gen).to(self.device)
        noise = self._randn(x0.shape, gen)
        x_t = self.schedule.q_sample(x0, t, noise)
        out = self.transformer(x_t, timestep=t, class_labels=labels).sample  # (B, C or 2C, H, W)
        c = self.latent_channels
        mse = ((noise - out[:, :c].float()) ** 2).mean()
        terms = {"mse": mse, "null_fraction": (labels == self.null_id).float().mean()}
        loss = mse
        if out.shape[1] == 2 * c and self.hparams.vlb_weight > 0:
            vb = vlb_bits(self.schedule, x0, x_t, t, out[:, :c].detach().float(), out[:, c:].float()).mean()
            terms["vlb"] = vb
            loss = loss + self.hparams.vlb_weight * vb
        terms["loss"] = loss
        return terms

    def training_step(self, batch: dict | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every image of the batch was unreadable (reported by the datamodule)
            return None
        terms = self.diffusion_loss(batch)
        b = batch["label"].shape[0]
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        if (self.global_step + 1) % max(every, 1) == 0:  # log only on the steps the logger writes
            self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=b)
        self.log("loss", terms["loss"].detach(), prog_bar=True, logger=False, batch_size=b)
        return terms["loss"]

    def validation_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is None:
            return
        terms = self.diffusion_loss(batch, salt=1 + batch_idx)
        self.log_dict(
            {f"val/{k}": v for k, v in terms.items() if k != "null_fraction"},
            batch_size=batch["label"].shape[0],
            sync_dist=True,
        )

    def optimizer_step(self, *args, **kwargs) -> None:
        """Step, then update the EMA inside the step so that a checkpoint taken at this step includes it."""
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.transformer)

    # -- checkpoints and export -----------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("vae.")}
        checkpoint["state_dict"] = self.label_strategy.checkpoint_state(state, self.transformer)
        checkpoint["priorswap"] = {"num_classes": self.num_classes, "class_names": self.class_names}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("priorswap", {})
        self.class_names = self.class_names or meta.get("class_names")

    def ema_transformer(self) -> torch.nn.Module:
        """The EMA weights as a plain DiT module (what sampling and export use)."""
        return self.ema.module if self.ema is not None else self.transformer

    def denoiser(self, ema: bool = True) -> "DiTDenoiser":  # noqa: F821 - imported inside, to keep diffusers lazy
        """This fine-tune as a class-conditional denoiser on its own schedule and latent space (paper Eq. 6's eps).

        ``ema=True`` wraps the EMA weights (what sampling and export use, updated in place as training goes on);
        ``ema=False`` a frozen snapshot of the live weights, so sampling never switches the trained module to eval
        mode or freezes it. Available once the label table is sized (``configure_model`` or checkpoint loading).
        """
        if self.ema is None:
            raise PriorswapError(
                "the fine-tune has no label table yet; its denoiser exists once fit or checkpoint loading has built it"
            )
        # the schedule the loss trains on (float64), not the config's float32 one
        sched = self.schedule.alphas_cumprod
        space = latent_space(self.hparams.vae or "", self.scheduler_config, self.vae, self.latent_channels, sched)
        net = self.ema.module if ema else copy.deepcopy(self.transformer)
        return self.label_strategy.denoiser(net, space, self.num_classes, ema)

    def on_fit_end(self) -> None:
        if not self.hparams.export_on_fit_end:
            return
        folder = self.default_export_dir()  # on every rank: under DDP trainer.log_dir is a broadcast from rank 0
        if self.trainer.is_global_zero:
            path = self.export(folder)
            print(f"priorswap: exported EMA model to {path}")

    def export(self, path: str) -> str:
        """Save the EMA model as a diffusers DiT pipeline folder (+ id2label.json); a LoRA as its adapter folder
        (base reference + adapter safetensors + id2label.json, ``priorswap.toolkit.dit.lora_files``)."""
        return self.label_strategy.export(self, path)
