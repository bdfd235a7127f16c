"""Watch a fine-tune: vanilla vs prior-swapped CFG at checkpoints, with grids and metrics in TensorBoard.

The callback only assembles parts (``priorswap.toolkit.evaluation`` does the sampling and metric maths): it samples
from the EMA weights of a :class:`priorswap.toolkit.training.module.DiTFineTune`, takes the unconditional eps either
from the fine-tune itself (vanilla, Eq. 6) or from a frozen base (swapped, Eq. 7), on the same labels and
per-sample seeds, and logs one side-by-side grid per scale plus ``cfg_eval/<metric>_{vanilla,swapped,delta}_g<scale>``
scalars. Samples are split across ranks and statistics summed, so the numbers do not depend on the GPU count;
an error on one rank is raised on every rank.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from priorswap.toolkit.core.denoisers import ModelDenoiser
from priorswap.toolkit.core.pairing import pair
from priorswap.toolkit.core.sampling import Guidance, vae_decoder
from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.evaluation import (
    MODES,
    EvalSettings,
    PendingReference,
    eval_labels,
    evaluate_local,
    grid_rows,
    local_reference,
    sample_images,
    summarise,
)
from priorswap.toolkit.metrics import FeatureExtractor, build_extractor, load_feature_network
from priorswap.toolkit.metrics.factory import metric_name as fd_metric_name
from priorswap.toolkit.priors import load_prior
from priorswap.toolkit.training.interrupt import stop_requested, stopping


class PriorSwapEval(Callback):
    """Evaluate vanilla and prior-swapped CFG every N steps, at checkpoints and at the end of fit.

    Args:
        prior: base model folder or hub id; None uses the fine-tune's ``pretrained`` model (the paper's choice), and
            for a LoRA fine-tune that base (None, "base", or the ``pretrained`` it started from) is the LoRA with its
            adapter off, run in the same batched forward: no second model is loaded;
            "initial" uses a frozen copy of the model as it was when fit started (for random-init plumbing runs);
            any :class:`priorswap.toolkit.core.denoisers.ModelDenoiser` (e.g. an SD or PixArt prior from ``load_prior``) is used as is.
        guidance_scales: CFG scales to evaluate (paper: 1.5).
        num_samples: samples per (scale, mode) for the metrics (paper: FID-5k).
        steps: sampler steps (paper: 50).
        scheduler: ddim, ddpm, dpm++, euler or euler_a (paper: ddim).
        batch_size: images per sampling batch, per GPU.
        seed: seeds the evaluation's labels and per-sample noise, the same for vanilla and swapped.
        every_n_steps: evaluate every this many optimiser steps (None: never by step count).
        on_checkpoint: also evaluate whenever a checkpoint is saved.
        at_fit_end: also evaluate when fit ends.
        extractor: "inception" (FID + IS), "dinov2" (FD-DINOv2), a feature-network file, or a FeatureExtractor.
        extractor_weights: local weights file of the extractor (offline machines).
        metric_name: name of the Fréchet metric in tags (default: fid for inception, fd_dinov2, fd otherwise).
        classifier: a network (module or TorchScript / .pt2 file) mapping images in [0, 1] to class logits;
            adds ``acc_*``: how often it agrees with the requested label.
        reference_samples: real validation images for the reference statistics (None: the whole split).
        stats_cache: folder caching reference statistics (keyed by dataset, extractor and resolution).
        grid_samples: seeds shown in each grid (vanilla row above swapped row).
        offload_prior: keep the prior on the CPU between evaluations.
        guided_channels: guide only the first N output channels (3: the original DiT code; None: all, as diffusers).
        prior_mix: unconditional eps = prior_mix * prior + (1 - prior_mix) * fine-tune; 1 is the paper's swap.
        progress: show a progress bar while sampling.
        output: CSV of one row per evaluation (a .jsonl is written next to it); default ``<log dir>/cfg_eval.csv``.
    """

    def __init__(
        self,
        prior: str | ModelDenoiser | None = None,
        guidance_scales: list[float] = [1.5],  # noqa: B006 - LightningCLI reads the default from the signature; never mutated
        num_samples: int = 1000,
        steps: int = 50,
        scheduler: str = "ddim",
        batch_size: int = 32,
        seed: int = 0,
        every_n_steps: int | None = 2000,
        on_checkpoint: bool = False,
        at_fit_end: bool = True,
        extractor: str | FeatureExtractor = "inception",
        extractor_weights: str | None = None,
        metric_name: str | None = None,
        classifier: str | torch.nn.Module | None = None,
        reference_samples: int | None = None,
        stats_cache: str | None = "~/.cache/priorswap/refstats",
        grid_samples: int = 8,
        offload_prior: bool = True,
        guided_channels: int | None = None,
        prior_mix: float = 1.0,
        progress: bool = False,
        output: str | None = None,
    ):
        if num_samples < 1 or grid_samples < 0 or not guidance_scales:
            raise PriorswapError(
                "PriorSwapEval needs num_samples >= 1, grid_samples >= 0 and at least one guidance scale"
            )
        self.settings = EvalSettings(
            tuple(float(g) for g in guidance_scales),
            num_samples,
            steps,
            scheduler,
            batch_size,
            seed,
            guided_channels,
            prior_mix,
        )
        self.prior_ref = prior
        self.every_n_steps, self.on_checkpoint, self.at_fit_end = every_n_steps, on_checkpoint, at_fit_end
        # built now, so missing weights or an unknown name fail before training starts
        self.extractor = (
            extractor if isinstance(extractor, torch.nn.Module) else build_extractor(extractor, extractor_weights)
        )
        self.metric = metric_name or fd_metric_name(extractor)
        self.classifier = load_feature_network(classifier) if isinstance(classifier, (str, os.PathLike)) else classifier
        self.reference_samples, self.stats_cache = reference_samples, stats_cache
        self.grid_samples, self.offload_prior, self.progress, self.output = (
            grid_samples,
            offload_prior,
            progress,
            output,
        )
        self.prior = None
        self.paired = None  # self.prior on the model's sampling schedule (priorswap.toolkit.core.pairing.pair)
        self._free = False  # the LoRA's own base (priorswap.toolkit.lora.BasePrior), built at fit start
        self._initial_state: dict[str, torch.Tensor] | None = None  # "initial" prior weights from a checkpoint
        self.reference = None
        self._last_step = -1
        self.rows: list[dict[str, Any]] = []
        self.last_values: dict[str, float] = {}
        self.eval_seconds = 0.0

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Load the prior before any training (a bad folder or hub id fails at once); pairing waits for
        ``on_fit_start``, after Lightning's ``configure_model`` has sized the label table."""
        if stage != "fit" or self.prior is not None:
            return
        lora = getattr(pl_module, "lora", None) is not None
        if self.prior_ref == "base" and not lora:
            raise PriorswapError(
                "PriorSwapEval prior 'base' is a LoRA fine-tune's own base; this fine-tune has no LoRA"
            )
        if lora and self.prior_ref in (None, "base", getattr(pl_module.hparams, "pretrained", None)):
            self._free = True
            return
        ref = self.prior_ref or getattr(pl_module.hparams, "pretrained", None)
        if not ref:
            raise PriorswapError(
                "PriorSwapEval has no prior: set prior (a base model folder, hub id or 'initial'); the fine-tune was not started from a pretrained model"
            )
        if isinstance(ref, ModelDenoiser):
            self.prior = ref
        elif ref != "initial":
            self.prior = load_prior(ref).denoiser

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        """Freeze the "initial" prior (restored from the checkpoint on resume) and check the pair."""
        if self._free:
            from priorswap.toolkit.lora import BasePrior

            self.prior = BasePrior(pl_module.denoiser())
        if self.prior is None:  # "initial": the weights fit started from, kept in checkpoints so resume is exact
            self.prior = pl_module.denoiser(ema=False)
            self.prior.name = "initial weights"
            if self._initial_state is not None:
                self.prior.transformer.load_state_dict(self._initial_state)
                self._initial_state = None
        self.paired = pair(pl_module.denoiser(), self.prior, (pl_module.transformer.config.sample_size,) * 2)

    def state_dict(self) -> dict[str, Any]:
        if self.prior_ref == "initial" and self.prior is not None:
            return {"initial_weights": {k: v.detach().cpu() for k, v in self.prior.transformer.state_dict().items()}}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._initial_state = state_dict.get("initial_weights")

    # -- triggers -------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # a stopping fit (SIGTERM, Ctrl-C) skips it: the save and exit must fit in the scheduler's grace period
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and not stop_requested(trainer):
            self.evaluate(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self.on_checkpoint and not stopping(trainer):
            self.evaluate(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.at_fit_end:
            self.evaluate(trainer, pl_module)

    # -- one evaluation -------------------------------------------------------------------------
    def evaluate(self, trainer: L.Trainer, pl_module) -> dict[str, float]:
        """Sample both modes at every scale, gather metrics over ranks, log and write one row."""
        step = trainer.global_step
        if step == self._last_step:
            return self.last_values
        self._last_step = step
        start = time.perf_counter()
        device, rank, world = pl_module.device, trainer.global_rank, trainer.world_size

        def all_reduce(t: torch.Tensor) -> torch.Tensor:
            if world == 1:
                return t
            return trainer.strategy.reduce(t.to(device), reduce_op="sum").cpu()

        model = pl_module.denoiser()
        decode = vae_decoder(pl_module.vae) if pl_module.vae is not None else None
        failure: BaseException | None = None
        local, grids = {}, {}
        try:
            self.prior.to(device)
            self.extractor.to(device)
            if self.reference is None:
                self.reference = self._reference(trainer, pl_module, rank, world)
            with self._precision(trainer):
                local = evaluate_local(
                    model,
                    self.paired,
                    pl_module.num_classes,
                    self.settings,
                    pl_module.scheduler_config,
                    decode,
                    self.extractor,
                    self._classify(device),
                    rank,
                    world,
                    self.progress,
                )
                if rank == 0 and self.grid_samples:
                    grids = self._grids(model, pl_module, decode)
        except BaseException as e:  # noqa: BLE001 - re-raised below on every rank
            failure = e
        failed = all_reduce(torch.tensor([1.0 if failure else 0.0], dtype=torch.float64))
        if failed.item() > 0:
            if failure is not None:
                raise failure
            raise RuntimeError("PriorSwapEval failed on another rank; see that rank's error")
        values = summarise(local, self.reference.gather(all_reduce, rank == 0), self.metric, all_reduce)
        if self.offload_prior and device.type != "cpu":
            self.prior.to("cpu")
        seconds = time.perf_counter() - start
        self.eval_seconds += seconds
        self.last_values = values
        if rank == 0:
            self._log(trainer, step, values, grids, seconds)
        return values

    @contextlib.contextmanager
    def _precision(self, trainer):
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            yield

    def _classify(self, device):
        if self.classifier is None:
            return None
        clf = self.classifier.to(device)
        return lambda images: clf(images.to(device))

    def _grids(self, model, pl_module, decode) -> dict[float, torch.Tensor]:
        k = min(self.grid_samples, self.settings.num_samples)
        labels = eval_labels(self.settings.num_samples, pl_module.num_classes)
        out = {}
        for scale in self.settings.guidance_scales:
            g = Guidance(scale=scale, prior_mix=self.settings.prior_mix, guided_channels=self.settings.guided_channels)
            rows = {
                m: sample_images(
                    model,
                    self.paired if m == "swapped" else None,
                    labels,
                    list(range(k)),
                    g,
                    self.settings,
                    pl_module.scheduler_config,
                    decode,
                )
                for m in MODES
            }
            out[scale] = grid_rows(rows)
        return out

    # -- reference statistics ---------------------------------------------------------------------
    def _reference(self, trainer, pl_module, rank, world) -> PendingReference:
        """This rank's share of the real validation images' statistics (or the cached total)."""
        dm = trainer.datamodule
        if dm is None:
            raise PriorswapError(
                "PriorSwapEval needs a datamodule with a validation split for its reference statistics"
            )
        loader = dm.val_dataloader()
        key = {
            "dataset": getattr(dm, "dataset_name", type(dm).__name__),
            "split": "val",
            "root": os.path.abspath(str(getattr(dm, "root", ""))),
            "classes": getattr(dm, "classes", None),
            "resolution": getattr(dm, "resolution", pl_module.transformer.config.sample_size),
        }
        return local_reference(
            self.extractor,
            loader.dataset,
            self.reference_samples,
            key,
            self.stats_cache,
            lambda b: self._to_images(b, pl_module),
            loader.collate_fn,
            self.settings.batch_size,
            rank,
            world,
        )

    @torch.no_grad()
    def _to_images(self, batch: dict, pl_module) -> torch.Tensor:
        if "pixels" in batch:
            return (batch["pixels"].float() / 2 + 0.5).clamp(0, 1)
        # latent cache: decode the latent mean (an approximation of the real image)
        vae = pl_module.vae
        mean = batch["latent_mean"].to(device=pl_module.device, dtype=vae.dtype)
        return (vae.decode(mean).sample.float() / 2 + 0.5).clamp(0, 1).cpu()

    # -- output -----------------------------------------------------------------------------------
    def _log(
        self, trainer, step: int, values: dict[str, float], grids: dict[float, torch.Tensor], seconds: float
    ) -> None:
        from priorswap.toolkit.images import make_grid

        metrics = {f"cfg_eval/{k}": v for k, v in values.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            experiment = getattr(logger, "experiment", None)
            if grids and hasattr(experiment, "add_image"):
                for scale, images in grids.items():
                    grid = make_grid(list(images.float().chunk(2)), row_labels=list(MODES))
                    experiment.add_image(
                        f"cfg_eval/samples_g{scale:g} (top vanilla, bottom swapped)", grid, global_step=step
                    )
        row = {
            "step": step,
            "epoch": trainer.current_epoch,
            "metric": self.metric,
            "eval_seconds": round(seconds, 3),
            **values,
        }
        self.rows.append(row)
        self._write_rows(trainer)

    def output_path(self, trainer) -> str:
        if self.output:
            return os.path.expanduser(self.output)
        # the logger's own folder, as Trainer.log_dir finds it but without its broadcast: only rank 0 writes rows,
        # and a broadcast from rank 0 alone would hang (or kill) a DDP run at its first evaluation
        logger = trainer.loggers[0] if trainer.loggers else None
        log_dir = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None) if logger is not None else None
        return os.path.join(log_dir or trainer.default_root_dir, "cfg_eval.csv")

    def _write_rows(self, trainer) -> None:
        path = self.output_path(trainer)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        previous = _read_jsonl(path[:-4] + ".jsonl" if path.endswith(".csv") else path + ".jsonl")
        steps = {r["step"] for r in self.rows}
        rows = [r for r in previous if r.get("step") not in steps] + self.rows  # keep rows of earlier (resumed) runs
        fields = list(dict.fromkeys(k for r in rows for k in r))
        from priorswap.toolkit.files import write_text_atomic

        write_text_atomic(path, lambda f: _write_csv(f, rows, fields))
        write_text_atomic(
            path[:-4] + ".jsonl" if path.endswith(".csv") else path + ".jsonl",
            lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows)),
        )


def _write_csv(f, rows, fields):
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
