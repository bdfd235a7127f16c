"""The demo pipeline, stage by stage; each stage's output is written atomically and reused on a re-run.

1. data: Fashion-MNIST from the Debian package;
2. metric network: the shipped classifier (or ``--retrain``);
3. base: the shipped 10-class pixel DiT (or ``--retrain``: ``priorswap fit -c recipes/demo_base.yaml``);
4. fine-tunes: ``priorswap fit -c recipes/demo_{regime}.yaml`` per regime and fine-tune seed (callback on);
5. evaluation per fine-tune: the prior drift, then per sampling seed vanilla vs swapped at every scale and the
   unconditional samples; the base's unconditional samples once per sampling seed;
6. report: ``report.md``, one grid per regime and an FD/KID-vs-scale plot.
Each stage's wall time goes into the report.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from functools import partial
from importlib import resources

import torch

from ..core.pairing import pair
from ..core.sampling import Guidance
from ..dit.load import load_dit
from ..errors import PriorswapError
from ..evaluation import EvalSettings, sample_images
from ..files import atomic_write
from ..lora import BasePrior
from ..priors import load_prior
from . import measure
from .classifier import ASSET as CLASSIFIER_ASSET
from .classifier import FMNISTExtractor, FMNISTSubsetClassifier, accuracy, load_classifier, train_classifier
from .config import DemoConfig, Regime
from .fmnist import load_split

# package data (pyproject's package-data), found the same way in a source checkout and in a wheel install
BASE_ASSET = str(resources.files("priorswap.toolkit").joinpath("assets", "demo_base"))
CLASSES = [5, 7, 8, 9]  # Sandal, Sneaker, Bag, Ankle boot -> 0..3


class Clock:
    """Wall seconds per stage, for the report (the profile a user can check against their own machine)."""

    def __init__(self):
        self.start = self.mark = time.perf_counter()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self.mark
        self.mark = now

    def total(self) -> float:
        return time.perf_counter() - self.start


def run_demo(cfg: DemoConfig) -> str:
    clock = Clock()
    os.makedirs(cfg.out, exist_ok=True)
    _say(f"priorswap demo ({cfg.preset}) -> {os.path.abspath(cfg.out)}")
    test_all = load_split("test")  # stage 1; a missing Debian package is a one-line error
    clf_path = _classifier(cfg, test_all)
    base = _base(cfg)
    clock.lap("data, classifier, base")
    runs = {}
    for regime in cfg.regimes:
        for seed in cfg.finetune_seeds:
            runs[(regime.name, seed)] = _finetune(cfg, regime, seed, base, clf_path)
            clock.lap("fine-tunes (with the callback)")
    results = _evaluate(cfg, base, runs, clf_path, test_all, clock)
    from .report import write_report

    results["seconds"] = clock.total()
    results["stages"] = clock.stages
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
        _say("training the Fashion-MNIST classifier (10 epochs)")
        train_classifier(load_split("train"), test, path, epochs=10, progress=cfg.progress)
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
        _fit("demo_base.yaml", cfg, ["--trainer.logger.init_args.name", "demo_base", *_resume_or_restart(run)])
    return export


def _finetune(cfg: DemoConfig, regime: Regime, seed: int, base: str, clf_path: str) -> str:
    name = cfg.run_name(regime, seed)
    run = os.path.join(cfg.out, "tb", "finetunes", name)
    export = os.path.join(run, "export")
    exported = "adapter_model.safetensors" if regime.lora else "model_index.json"  # a LoRA exports its adapter only
    if os.path.isfile(os.path.join(export, exported)) and os.path.isfile(os.path.join(run, "done.json")):
        _say(f"fine-tune {name} already done; reusing it")
        return export
    steps, images = cfg.steps_of(regime), cfg.images_of(regime)
    _say(f"fine-tune {name}: {regime.title}; {images} images per class, {steps} steps, seed {seed}")
    cb = "--trainer.callbacks.init_args."
    overrides = [
        "--model.pretrained", base, "--trainer.max_steps", str(steps), "--data.init_args.limit_per_class", str(images),
        "--seed_everything", str(seed), "--data.init_args.seed", str(seed),
        "--trainer.logger.init_args.name", "finetunes", "--trainer.logger.init_args.version", name,
        cb + "extractor.init_args.weights", clf_path, cb + "classifier.init_args.weights", clf_path,
        cb + "stats_cache", os.path.join(cfg.out, "cache"), cb + "every_n_steps", "null",
        cb + "num_samples", str(cfg.callback_samples), cb + "batch_size", str(cfg.callback_samples),
        cb + "steps", str(cfg.steps), cb + "guidance_scales", "[1.5]",
        "--trainer.log_every_n_steps", str(max(1, min(10, steps))), "--trainer.enable_progress_bar", str(cfg.progress).lower(),
    ]  # fmt: skip
    _fit(regime.recipe, cfg, overrides + _resume_or_restart(run))
    _atomic_json(os.path.join(run, "done.json"), {"steps": steps, "images_per_class": images, "seed": seed})
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
            [
                "fit",
                "-c",
                str(path),
                "--trainer.logger.init_args.save_dir",
                os.path.join(cfg.out, "tb"),
                *overrides,
            ]
        )


def _evaluate(cfg: DemoConfig, base_ref: str, runs: dict, clf_path: str, test_all, clock) -> dict:
    """Everything sampled or measured, cached per (fine-tune, sampling seed) in eval/."""
    extractor = FMNISTExtractor(clf_path)
    classifier = FMNISTSubsetClassifier(CLASSES, clf_path)
    net = load_classifier(clf_path)
    base = load_prior(base_ref, torch.float32)
    x_all, y_all = test_all
    in4 = torch.isin(y_all, torch.tensor(CLASSES))
    x4 = x_all[in4]
    y4 = torch.tensor([CLASSES.index(int(v)) for v in y_all[in4]])
    ref4, ref10 = measure.Reference.of(extractor, x4), measure.Reference.of(extractor, x_all)
    held4 = torch.randperm(len(x4), generator=torch.Generator().manual_seed(0))[: cfg.drift_images]
    held10 = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(1))[: cfg.drift_images]
    out = {
        "config": asdict(cfg),
        "classifier_test_accuracy": accuracy(net, x_all, y_all),
        "base_uncond": [],
        "runs": [],
    }
    sched = None
    for (regime_name, ft_seed), export in runs.items():
        regime = next(r for r in cfg.regimes if r.name == regime_name)
        ft = load_dit(export, "fine-tune", torch.float32)
        sched = ft.scheduler_config
        paired = pair(ft.denoiser, base.denoiser, (ft.denoiser.sample_size,) * 2)
        # a LoRA's "swapped" is its free prior, the adapter-off self in the same batched forward (what
        # `priorswap sample dit --prior base` runs); the drift reads the loaded base, which that is bit for bit
        prior = BasePrior(ft.denoiser) if regime.lora else paired
        name = cfg.run_name(regime, ft_seed)
        drift_args = (ft.denoiser, paired, x4[held4], y4[held4], x_all[held10], cfg.drift_timesteps)
        drift = _cached(cfg, f"{name}-drift-n{cfg.drift_images}.json", partial(measure.prior_drift, *drift_args))
        record = {"regime": regime_name, "ft_seed": ft_seed, "name": name, "drift": drift, "per_seed": []}
        for seed in cfg.sample_seeds:
            nets = (ft.denoiser, prior, sched, extractor, classifier, net, ref4, ref10)
            record["per_seed"].append(
                _cached(cfg, cfg.eval_name(regime, ft_seed, seed), partial(_unit, cfg, name, seed, *nets))
            )
        if ft_seed == cfg.finetune_seeds[0]:
            record["grid"] = _grid(cfg, ft.denoiser, prior, sched)
        out["runs"].append(record)
        clock.lap("evaluation of the fine-tunes")
    for seed in cfg.sample_seeds:
        key = f"base-seed{seed}-n{cfg.num_samples}-steps{cfg.steps}.json"
        args = (cfg, base.denoiser, seed, sched, extractor, net, ref4, ref10, CLASSES)
        out["base_uncond"].append(_cached(cfg, key, partial(measure.unconditional, *args)))
    clock.lap("base unconditional samples")
    return out


def _unit(cfg: DemoConfig, name: str, seed: int, ft, base, sched, extractor, classifier, net, ref4, ref10) -> dict:
    """One run: one fine-tune, one sampling seed."""
    _say(f"evaluating {name}, sampling seed {seed}: {len(cfg.scales)} scales x 2 methods x {cfg.num_samples} samples")
    return {
        "seed": seed,
        "values": measure.guided(cfg, ft, base, seed, sched, extractor, classifier, ref4),
        "uncond": measure.unconditional(cfg, ft, seed, sched, extractor, net, ref4, ref10, CLASSES),
    }


def _cached(cfg: DemoConfig, name: str, compute):
    path = os.path.join(cfg.out, "eval", name)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    value = compute()
    _atomic_json(path, value)
    return value


def _grid(cfg: DemoConfig, ft, base, sched: dict) -> dict:
    """Samples for a regime's grid: columns are seeds (classes 0-3 repeating), rows vanilla/swapped per scale."""
    settings = EvalSettings(cfg.scales, 8, cfg.steps, "ddim", 8, 0)
    labels = torch.arange(8) % 4
    rows = {}
    for scale in cfg.scales:
        for mode, prior in (("vanilla", None), ("swapped", base)):
            rows[f"{mode} g={scale:g}"] = sample_images(
                ft, prior, labels, list(range(8)), Guidance(scale), settings, sched, None
            )
    return rows


def _atomic_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2)
