"""The demo pipeline, stage by stage; each stage's output is written atomically and reused on a re-run.

1. data: Fashion-MNIST from the Debian package;
2. metric network: the shipped classifier (or ``--retrain``);
3. base: the shipped 10-class pixel DiT (or ``--retrain``: ``priorswap fit -c recipes/demo_base.yaml``);
4. fine-tune: ``priorswap fit -c recipes/demo_finetune.yaml`` (4 classes, limited data, callback on);
5. evaluation: vanilla vs swapped at several scales over several sampling seeds, plus unconditional FDs;
6. report: ``report.md``, a grid and an FD-vs-scale plot.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from importlib import resources

import torch

from ..errors import PriorswapError
from ..evaluation import EvalSettings, evaluate_local, sample_images, summarise
from ..files import atomic_write
from ..loading import load_dit, load_prior
from ..metrics import FeatureStats
from ..pairing import pair
from ..sampling import Guidance
from .classifier import ASSET as CLASSIFIER_ASSET
from .classifier import FMNISTExtractor, FMNISTSubsetClassifier, accuracy, load_classifier, train_classifier
from .fmnist import load_split

# package data (pyproject's package-data), found the same way in a source checkout and in a wheel install
BASE_ASSET = str(resources.files("priorswap.toolkit").joinpath("assets", "demo_base"))
CLASSES = [5, 7, 8, 9]  # Sandal, Sneaker, Bag, Ankle boot -> 0..3


@dataclass
class DemoConfig:
    """How big the demo is: the default (the README table) is meant to fit in 10 minutes on a 2-core CPU; ``full`` uses
    more samples and steps."""

    out: str = "runs/demo"
    scales: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0)
    num_samples: int = 160  # per (scale, mode, seed)
    steps: int = 16  # DDIM steps (paper: 50)
    seeds: tuple[int, ...] = (0, 1, 2)
    finetune_steps: int = 300
    limit_per_class: int = 200
    batch_size: int = 160
    retrain: bool = False
    progress: bool = True

    @classmethod
    def full(cls, out: str) -> "DemoConfig":
        return cls(out=out, num_samples=1000, steps=50, seeds=(0, 1, 2))

    @classmethod
    def tiny(cls, out: str) -> "DemoConfig":  # CI: the whole pipeline on the shipped weights, at toy size
        return cls(
            out=out,
            scales=(1.0, 3.0),
            num_samples=8,
            steps=2,
            seeds=(0, 1),
            finetune_steps=3,
            limit_per_class=8,
            batch_size=8,
            progress=False,
        )

    def eval_name(self, seed: int) -> str:
        """Cached results are keyed by everything that changes them."""
        scales = "-".join(f"{s:g}" for s in self.scales)
        return f"seed{seed}-n{self.num_samples}-steps{self.steps}-g{scales}-ft{self.finetune_steps}.json"


def run_demo(cfg: DemoConfig) -> str:
    start = time.perf_counter()
    os.makedirs(cfg.out, exist_ok=True)
    _say(f"priorswap demo -> {os.path.abspath(cfg.out)}")
    test_all = load_split("test")  # stage 1; a missing Debian package is a one-line error
    clf_path = _classifier(cfg, test_all)
    base = _base(cfg)
    ft = _finetune(cfg, base, clf_path)
    results = _evaluate(cfg, base, ft, clf_path, test_all)
    from .report import write_report

    results["seconds"] = time.perf_counter() - start
    path = write_report(cfg, results)
    _say(f"report: {os.path.abspath(path)}")
    _say(f"TensorBoard: tensorboard --logdir {os.path.abspath(os.path.join(cfg.out, 'tb'))}")
    return path


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _classifier(cfg: DemoConfig, test) -> str:
    if not cfg.retrain:
        return CLASSIFIER_ASSET
    path = os.path.join(cfg.out, "assets", "fmnist_classifier.safetensors")
    if not os.path.isfile(path):
        _say("training the Fashion-MNIST classifier (2 epochs)")
        train_classifier(load_split("train"), test, path, epochs=2, progress=cfg.progress)
    return path


def _base(cfg: DemoConfig) -> str:
    if not cfg.retrain:
        if not os.path.isfile(os.path.join(BASE_ASSET, "model_index.json")):
            raise PriorswapError(f"shipped demo base {BASE_ASSET} is missing; `priorswap demo --retrain` rebuilds it")
        return BASE_ASSET
    run = os.path.join(cfg.out, "tb", "demo_base", "run")
    export = os.path.join(run, "export")
    if not os.path.isfile(os.path.join(export, "model_index.json")):
        _say("training the base model (recipes/demo_base.yaml; this takes about an hour on 2 cores)")
        _fit("demo_base.yaml", cfg, _resume_or_restart(run))
    return export


def _finetune(cfg: DemoConfig, base: str, clf_path: str) -> str:
    run = os.path.join(cfg.out, "tb", "demo_finetune", "run")
    export = os.path.join(run, "export")
    if os.path.isfile(os.path.join(export, "model_index.json")) and os.path.isfile(os.path.join(run, "done.json")):
        _say("fine-tune already done; reusing it")
        return export
    _say(f"fine-tuning the base on 4 classes ({cfg.finetune_steps} steps, {cfg.limit_per_class} images per class)")
    overrides = [
        "--model.pretrained",
        base,
        "--trainer.max_steps",
        str(cfg.finetune_steps),
        "--data.limit_per_class",
        str(cfg.limit_per_class),
        "--trainer.callbacks.init_args.extractor.init_args.weights",
        clf_path,
        "--trainer.callbacks.init_args.classifier.init_args.weights",
        clf_path,
        "--trainer.callbacks.init_args.stats_cache",
        os.path.join(cfg.out, "cache"),
        "--trainer.enable_progress_bar",
        str(cfg.progress).lower(),
    ]
    if cfg.finetune_steps < 100:
        overrides += [
            "--trainer.callbacks.init_args.every_n_steps",
            str(cfg.finetune_steps),
            "--trainer.callbacks.init_args.num_samples",
            str(cfg.num_samples),
            "--trainer.callbacks.init_args.steps",
            str(cfg.steps),
            "--trainer.log_every_n_steps",
            "1",
        ]
    _fit("demo_finetune.yaml", cfg, overrides + _resume_or_restart(run))
    _atomic_json(os.path.join(run, "done.json"), {"steps": cfg.finetune_steps})
    return export


def _resume_or_restart(run: str) -> list[str]:
    """An interrupted fit continues from its last.ckpt; one stopped before its first checkpoint starts over
    (``priorswap fit`` refuses to write a second run into a folder that holds one)."""
    if os.path.isfile(os.path.join(run, "checkpoints", "last.ckpt")):
        return ["--ckpt_path", "last"]
    if os.path.isdir(run):
        shutil.rmtree(run)
    return []


def _fit(recipe: str, cfg: DemoConfig, overrides: list[str]) -> None:
    from ..training.cli import run_lightning_cli

    with resources.as_file(resources.files("priorswap.recipes").joinpath(recipe)) as path:
        run_lightning_cli(
            ["fit", "-c", str(path), "--trainer.logger.init_args.save_dir", os.path.join(cfg.out, "tb"), *overrides]
        )


def _evaluate(cfg: DemoConfig, base_ref: str, ft_ref: str, clf_path: str, test_all) -> dict:
    """Per seed: vanilla/swapped at every scale, plus unconditional FDs; cached per seed in eval/."""
    extractor = FMNISTExtractor(clf_path)
    classifier = FMNISTSubsetClassifier(CLASSES, clf_path)
    ft, base = load_dit(ft_ref, "fine-tune", torch.float32), load_prior(base_ref, torch.float32)
    pair(ft.denoiser, base.denoiser, (ft.denoiser.sample_size,) * 2)
    x_all, y_all = test_all
    x4 = x_all[torch.isin(y_all, torch.tensor(CLASSES))]
    ref4, ref10 = _stats(extractor, x4), _stats(extractor, x_all)
    net = load_classifier(clf_path)
    out = {"config": asdict(cfg), "classifier_test_accuracy": accuracy(net, x_all, y_all), "per_seed": []}
    for seed in cfg.seeds:
        path = os.path.join(cfg.out, "eval", cfg.eval_name(seed))
        if os.path.isfile(path):
            with open(path) as f:
                out["per_seed"].append(json.load(f))
            continue
        _say(
            f"evaluating seed {seed}: {len(cfg.scales)} scales x 2 modes x {cfg.num_samples} samples, {cfg.steps} DDIM steps"
        )
        settings = EvalSettings(cfg.scales, cfg.num_samples, cfg.steps, "ddim", cfg.batch_size, seed * 100_003)
        local = evaluate_local(
            ft.denoiser,
            base.denoiser,
            4,
            settings,
            ft.scheduler_config,
            None,
            extractor,
            classifier,
            progress=cfg.progress,
        )
        values = summarise(local, ref4, "fd")
        uncond = {}
        for name, den in (("base", base.denoiser), ("finetune", ft.denoiser)):
            imgs = sample_images(
                den,
                None,
                None,
                list(range(cfg.num_samples)),
                Guidance(1.0),
                settings,
                ft.scheduler_config,
                None,
                cfg.progress,
                f"unconditional {name}",
            )
            stats = _stats(extractor, imgs)
            uncond[f"{name}_vs_4"] = stats.frechet_to(ref4)
            uncond[f"{name}_vs_10"] = stats.frechet_to(ref10)
            with torch.no_grad():
                pred = net(imgs).argmax(1)
            uncond[f"{name}_share_in_4_classes"] = float(torch.isin(pred, torch.tensor(CLASSES)).float().mean())
        record = {"seed": seed, "values": values, "uncond": uncond}
        _atomic_json(path, record)
        out["per_seed"].append(record)
    out["grid"] = _grid(cfg, ft, base)
    return out


def _grid(cfg: DemoConfig, ft, base) -> dict:
    """Samples for the report grid: columns are seeds (one per class), rows vanilla/swapped per scale."""
    settings = EvalSettings(cfg.scales, 8, cfg.steps, "ddim", 8, 0)
    labels = torch.arange(8) % 4
    rows = {}
    for scale in cfg.scales:
        for mode, prior in (("vanilla", None), ("swapped", base.denoiser)):
            rows[f"{mode} g={scale:g}"] = sample_images(
                ft.denoiser, prior, labels, list(range(8)), Guidance(scale), settings, ft.scheduler_config, None
            )
    return rows


def _stats(extractor, images: torch.Tensor) -> FeatureStats:
    stats = FeatureStats(extractor.dim)
    with torch.no_grad():
        for i in range(0, len(images), 500):
            stats.add(extractor(images[i : i + 500]))
    return stats


def _atomic_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2)
