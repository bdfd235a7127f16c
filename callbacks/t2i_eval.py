"""Watch a text-to-image fine-tune: vanilla vs prior-swapped CFG on a fixed prompt set, grids and metrics in TensorBoard.

The prompt counterpart of ``cfg_eval.PriorSwapEval`` for :class:`priorswap.toolkit.training.t2i_module.T2IFineTune`.
It samples the module's EMA weights through the pipeline class's own ``__call__`` with ``priorswap.toolkit.t2i``'s
:class:`~priorswap.toolkit.t2i.run.T2IJob` (the same code as ``priorswap sample t2i``), so its rows are the rows
that command gives for the exported model: vanilla, and swapped, whose unconditional half comes from the LoRA's
adapter-off self in the same mixed batch (the free prior) or from a named base pipeline (full fine-tunes).

Sample i is prompt ``i // samples_per_prompt`` from seed ``seed + i``, in both rows. Samples are split across ranks
in contiguous blocks; feature statistics, CLIP sums and grid thumbnails are gathered, so numbers and pictures do not
depend on the GPU count. An error on one rank is raised on every rank.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torch.utils.data import Dataset

from priorswap.data.caption_crop import CaptionCrop
from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.evaluation import local_reference
from priorswap.toolkit.files import write_text_atomic
from priorswap.toolkit.images import make_grid, quantize
from priorswap.toolkit.lora.mixed import adapter_layers, mixing_problem
from priorswap.toolkit.metrics import CLIPSimilarity, FeatureExtractor, FeatureStats, build_extractor
from priorswap.toolkit.metrics.factory import metric_name as fd_metric_name
from priorswap.toolkit.t2i.load import inspect_pipeline, load_pipeline
from priorswap.toolkit.t2i.pairing import check_pairing
from priorswap.toolkit.t2i.run import Settings, T2IJob
from priorswap.toolkit.t2i.swap import Prior
from priorswap.toolkit.t2i.timeline import Timeline
from priorswap.toolkit.training.t2i_export import pipeline_with

MODES = ("vanilla", "swapped")
THUMB = 128  # side of a grid tile: what crosses ranks and goes to TensorBoard


def read_prompt_file(path: str) -> list[str]:
    try:
        prompts = [line.strip() for line in Path(os.path.expanduser(path)).read_text("utf-8").splitlines()]
    except OSError as e:
        raise PriorswapError(f"T2IPriorSwapEval prompt_file {path!r} cannot be read ({e.strerror})") from None
    return [p for p in prompts if p]


class ImageFolder(Dataset):
    """Every image under ``root`` (sorted), centre-cropped to ``size`` as the captioned datamodules crop, in [0, 1]."""

    def __init__(self, root: str, size: int):
        self.root = os.path.expanduser(root)
        if not os.path.isdir(self.root):
            raise PriorswapError(f"T2IPriorSwapEval reference {root!r} is not a folder of images")
        ext = Image.registered_extensions()
        self.files = sorted(str(p) for p in Path(self.root).rglob("*") if p.suffix.lower() in ext and p.is_file())
        if len(self.files) < 2:
            raise PriorswapError(f"T2IPriorSwapEval reference {root!r} holds {len(self.files)} images; need >= 2")
        self.crop = CaptionCrop(size, center_crop=True, random_flip=False)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as image:
            return self.crop(image)[0] / 2 + 0.5


class T2IPriorSwapEval(Callback):
    """Sample a fixed prompt set vanilla and prior-swapped every N steps and at the end of fit; log grids and metrics.

    Args:
        prompts: the prompts (or ``prompt_file``: one per line).
        prompt_file: text file of prompts, one per line.
        samples_per_prompt: seeds per prompt: the columns of each prompt's grid; FD and CLIP use all samples.
        prior: None: a LoRA's own base (adapter off, in the same batch; no second model) or, for a full fine-tune,
            the ``pretrained`` pipeline it started from; or a pipeline folder or hub id in the same latent space.
        guidance_scale: CFG scale (None: the pipeline's own default, as ``sample t2i``).
        steps: sampling steps (None: the pipeline's own default).
        height, width: image size (None: the model's).
        negative_prompt: negative prompt; each model encodes it with its own encoders.
        batch_size: prompts per pipeline call, per GPU.
        seed: sample i starts from seed + i in both rows.
        every_n_steps: evaluate every this many optimiser steps (None: never by step count).
        at_fit_end: also evaluate when fit ends.
        reference: folder of real images; adds ``<metric>_{vanilla,swapped,delta}`` (FID or FD-DINOv2).
        reference_samples: use only the first this many reference images (None: all).
        extractor: "dinov2" (FD-DINOv2), "inception" (FID), a feature-network file, or a FeatureExtractor.
        extractor_weights: local weights file of the extractor (offline machines).
        clip_model: CLIP folder or hub id (e.g. openai/clip-vit-large-patch14), or a CLIPSimilarity; adds
            ``clip_score_*``: 100 * max(cos(image, prompt), 0), averaged (torchmetrics' CLIPScore).
        stats_cache: folder caching the reference statistics.
        offload_prior: keep a named prior on the CPU between evaluations.
        output: JSON-lines file of one row per evaluation; default ``<log dir>/t2i_eval.jsonl``.
    """

    def __init__(
        self,
        prompts: list[str] | None = None,
        prompt_file: str | None = None,
        samples_per_prompt: int = 4,
        prior: str | None = None,
        guidance_scale: float | None = None,
        steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        negative_prompt: str | None = None,
        batch_size: int = 8,
        seed: int = 0,
        every_n_steps: int | None = 500,
        at_fit_end: bool = True,
        reference: str | None = None,
        reference_samples: int | None = None,
        extractor: str | FeatureExtractor = "dinov2",
        extractor_weights: str | None = None,
        clip_model: str | CLIPSimilarity | None = None,
        stats_cache: str | None = "~/.cache/priorswap/refstats",
        offload_prior: bool = True,
        output: str | None = None,
    ):
        if (prompts is None) == (prompt_file is None):
            raise PriorswapError("T2IPriorSwapEval takes exactly one of prompts and prompt_file")
        self.prompts = list(prompts) if prompts is not None else read_prompt_file(prompt_file)
        if not self.prompts or samples_per_prompt < 1 or batch_size < 1:
            raise PriorswapError("T2IPriorSwapEval needs >= 1 prompt, samples_per_prompt >= 1 and batch_size >= 1")
        self.k, self.prior_ref, self.seed = samples_per_prompt, prior, seed
        self.settings = Settings(steps, guidance_scale, height, width, negative_prompt, batch_size=batch_size)
        self.settings.progress = False
        self.every_n_steps, self.at_fit_end, self.offload_prior, self.output = (
            every_n_steps, at_fit_end, offload_prior, output,
        )  # fmt: skip
        # built now, so missing weights or an unknown name fail before training starts
        self.extractor = None
        if reference is not None:
            self.extractor = (
                extractor if isinstance(extractor, torch.nn.Module) else build_extractor(extractor, extractor_weights)
            )
        self.metric = fd_metric_name(extractor)
        self.reference_dir, self.reference_samples, self.stats_cache = reference, reference_samples, stats_cache
        self.clip = CLIPSimilarity(clip_model) if isinstance(clip_model, str) else clip_model
        self.info = self.prior_info = self.prior_pipe = None
        self.free = False
        self.reference = None
        self._last_step = -1
        self.last_values: dict[str, float] = {}
        self.last_samples: dict[str, torch.Tensor] = {}  # this rank's images of the last evaluation, by mode
        self.last_block: range = range(0)  # their sample indices
        self.eval_seconds = 0.0

    @property
    def expanded_prompts(self) -> list[str]:
        """Sample i's prompt: what ``priorswap sample t2i --prompts ... --seed SEED`` takes to give the same rows."""
        return [p for p in self.prompts for _ in range(self.k)]

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Pair the prior from config files and load it before any training (a bad reference fails at once)."""
        if stage != "fit" or self.info is not None:
            return
        pretrained = getattr(pl_module.hparams, "pretrained", None)
        if not hasattr(pl_module, "pipe") or not pretrained:
            raise PriorswapError("T2IPriorSwapEval evaluates a text-to-image fine-tune (T2IFineTune)")
        self.info = inspect_pipeline(pretrained, "model.pretrained")
        lora = getattr(pl_module, "lora", None) is not None
        if self.prior_ref == "base" and not lora:
            raise PriorswapError("T2IPriorSwapEval prior 'base' is a LoRA's own base; this fine-tune has no LoRA")
        if lora and self.prior_ref in (None, "base", pretrained):
            net, was = pl_module.net, pl_module.net.training
            problem = mixing_problem(net.eval()) if adapter_layers(net) else None  # sampled in eval mode
            net.train(was)
            if problem:
                raise PriorswapError(f"T2IPriorSwapEval: the LoRA cannot give a free prior: {problem}")
            self.free = True
            return
        ref = self.prior_ref or pretrained
        self.prior_info = inspect_pipeline(ref, "T2IPriorSwapEval prior")
        check_pairing(self.info, self.prior_info)
        self.prior_pipe = load_pipeline(self.prior_info, pl_module.net.dtype, "cpu", what="T2IPriorSwapEval prior")

    # -- triggers -------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.evaluate(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.at_fit_end:
            self.evaluate(trainer, pl_module)

    # -- sampling -------------------------------------------------------------------------------
    def job(self, pl_module, block: range) -> T2IJob:
        """The samples ``block`` of the EMA weights as a ``T2IJob``: sample i is its prompt from seed + i."""
        ema = pl_module.ema.module
        parts = {pl_module.family.net: ema["net"], **{n: ema[n] for n in pl_module.trained if n != "net"}}
        pipe = pipeline_with(pl_module.pipe, **parts)
        prompts = self.expanded_prompts[block.start : block.stop]
        settings = Settings(**{**vars(self.settings), "seed": self.seed + block.start})
        job = T2IJob(pipe, self.info, prompts, settings)
        if self.free:
            job.prior, job.prior_pipe = Prior(None, job.timeline), pipe
        else:
            den = getattr(self.prior_pipe, self.prior_info.denoiser)
            job.prior = Prior(den, Timeline.of(self.prior_pipe.scheduler.config, self.prior_info.flow))
            job.prior_pipe, job.prior_info = self.prior_pipe, self.prior_info
        return job

    def evaluate(self, trainer: L.Trainer, pl_module) -> dict[str, float]:
        """Sample this rank's block in both modes, gather metrics and thumbnails, log on rank 0."""
        step = trainer.global_step
        if step == self._last_step:
            return self.last_values
        self._last_step = step
        start = time.perf_counter()
        device, rank, world = pl_module.device, trainer.global_rank, trainer.world_size
        n = len(self.prompts) * self.k
        per = math.ceil(n / world)
        block = range(min(rank * per, n), min((rank + 1) * per, n))
        training = pl_module.training
        failure, local, samples, pending = None, {}, {}, None
        try:
            pl_module.ema.eval()
            if self.prior_pipe is not None:
                self.prior_pipe.to(device)
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                if self.extractor is not None and self.reference is None:
                    pending = self._reference(pl_module, rank, world)
                samples = self.job(pl_module, block).rows(compare=True) if len(block) else {}
                local = self._local_metrics(samples, device, block)
        except BaseException as e:  # noqa: BLE001 - re-raised below on every rank
            failure = e
        finally:
            pl_module.train(training)
        failed = self._reduce(trainer, torch.tensor([1.0 if failure else 0.0], dtype=torch.float64), device)
        if failed.item() > 0:
            if failure is not None:
                raise failure
            raise RuntimeError("T2IPriorSwapEval failed on another rank; see that rank's error")
        if pending is not None:
            self.reference = pending.gather(lambda t: self._reduce(trainer, t, device), rank == 0)
        values = self._summarise(trainer, local, device)
        thumbs = {m: self._gather_thumbs(trainer, local["thumbs"][m], per, n) for m in MODES}
        if self.offload_prior and self.prior_pipe is not None and device.type != "cpu":
            self.prior_pipe.to("cpu")
        self.last_samples, self.last_block = samples, block
        seconds = time.perf_counter() - start
        self.eval_seconds += seconds
        self.last_values = values
        if rank == 0:
            self._log(trainer, step, values, thumbs, seconds)
        return values

    # -- metrics --------------------------------------------------------------------------------
    def _local_metrics(self, samples: dict[str, torch.Tensor], device, block: range) -> dict:
        """This rank's sums: feature statistics, CLIP score sums and counts, and uint8 thumbnails."""
        out: dict = {"stats": {}, "clip": {}, "thumbs": {}}
        prompts = self.expanded_prompts[block.start : block.stop]
        bs = self.settings.batch_size
        for m in MODES:
            images = samples.get(m, torch.zeros(0, 3, THUMB, THUMB))
            out["thumbs"][m] = (
                quantize(F.interpolate(images, size=(THUMB, THUMB), mode="area"))
                if len(images)
                else (torch.zeros(0, 3, THUMB, THUMB, dtype=torch.uint8))
            )
            if self.extractor is not None:
                stats = FeatureStats(self.extractor.to(device).dim)
                for i in range(0, len(images), bs):
                    stats.add(self.extractor(images[i : i + bs].to(device)))
                out["stats"][m] = stats
            if self.clip is not None:
                clip, total = self.clip.to(device), torch.zeros(2, dtype=torch.float64)
                for i in range(0, len(images), bs):
                    cos = clip.clip_t(images[i : i + bs].to(device), prompts[i : i + bs])
                    total += torch.tensor([float((100 * cos.clamp(min=0)).sum()), float(len(cos))], dtype=torch.float64)
                out["clip"][m] = total
        return out

    def _reduce(self, trainer, t: torch.Tensor, device) -> torch.Tensor:
        if trainer.world_size == 1:
            return t
        return trainer.strategy.reduce(t.to(device), reduce_op="sum").cpu()

    def _summarise(self, trainer, local: dict, device) -> dict[str, float]:
        values: dict[str, float] = {}
        for m in MODES:
            if self.extractor is not None:
                state = {k: self._reduce(trainer, v.clone(), device) for k, v in local["stats"][m].state().items()}
                values[f"{self.metric}_{m}"] = FeatureStats.from_state(state).frechet_to(self.reference)
            if self.clip is not None:
                total, count = self._reduce(trainer, local["clip"][m], device).tolist()
                values[f"clip_score_{m}"] = total / max(count, 1.0)
        for key in list(values):
            if key.endswith("_vanilla"):
                values[key[: -len("vanilla")] + "delta"] = values[key[: -len("vanilla")] + "swapped"] - values[key]
        return values

    def _gather_thumbs(self, trainer, thumbs: torch.Tensor, per: int, n: int) -> torch.Tensor:
        """Every rank's thumbnails in sample order (blocks padded to ``per`` for the collective, then cut to n)."""
        if trainer.world_size == 1:
            return thumbs
        padded = torch.zeros(per, *thumbs.shape[1:], dtype=torch.uint8)
        padded[: len(thumbs)] = thumbs
        gathered = trainer.strategy.all_gather(padded.to(trainer.strategy.root_device))
        return gathered.reshape(-1, *thumbs.shape[1:])[:n].cpu()

    def _reference(self, pl_module, rank: int, world: int):
        """This rank's share of the reference folder's statistics, at the sample size (or stats_cache's total)."""
        size = self.settings.height or int(pl_module.net.config.sample_size) * pl_module.pipe.vae_scale_factor
        dataset = ImageFolder(self.reference_dir, size)
        key = {"dataset": "t2i_reference", "root": os.path.abspath(dataset.root), "resolution": size}
        return local_reference(
            self.extractor, dataset, self.reference_samples, key, self.stats_cache, lambda b: b,
            batch_size=self.settings.batch_size, rank=rank, world=world,
        )  # fmt: skip

    # -- output -----------------------------------------------------------------------------------
    def _log(self, trainer, step: int, values: dict[str, float], thumbs: dict[str, torch.Tensor], seconds: float):
        metrics = {f"t2i_eval/{k}": v for k, v in values.items()}
        metrics["t2i_eval/seconds"] = seconds
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            experiment = getattr(logger, "experiment", None)
            if not hasattr(experiment, "add_image"):
                continue
            for p, prompt in enumerate(self.prompts):
                rows = [thumbs[m][p * self.k : (p + 1) * self.k].float() / 255 for m in MODES]
                grid = make_grid(
                    rows,
                    row_labels=list(MODES),
                    col_labels=[f"seed {self.seed + p * self.k + j}" for j in range(self.k)],
                )
                experiment.add_image(
                    f"t2i_eval/{p:02d} {prompt[:60]} (top vanilla, bottom swapped)", grid, global_step=step
                )
        row = {"step": step, "epoch": trainer.current_epoch, "eval_seconds": round(seconds, 3), **values}
        path = self.output_path(trainer)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        old = Path(path).read_text() if os.path.isfile(path) else ""
        write_text_atomic(path, lambda f: f.write(old + json.dumps(row) + "\n"))

    def output_path(self, trainer) -> str:
        if self.output:
            return os.path.expanduser(self.output)
        logger = trainer.loggers[0] if trainer.loggers else None
        log_dir = (getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)) if logger else None
        return os.path.join(log_dir or trainer.default_root_dir, "t2i_eval.jsonl")
