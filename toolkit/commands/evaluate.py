"""``priorswap eval dit``: vanilla vs prior-swapped CFG on any exported DiT, with the callback's metrics.

    priorswap eval dit --model runs/x/export --prior facebook/DiT-XL-2-256 --data food101 --data-root /datasets/food101 \
        --num-samples 5000 --guidance-scale 1.5 --extractor inception --extractor-weights pt_inception.pth --output-dir out

Prints a table (metric, vanilla, swapped, swapped - vanilla) and writes it as out/eval.md and out/eval.csv.
``priorswap eval --model ...`` (no kind) is the same command. ``priorswap eval ip2p|zero123|vd`` live in
``eval_unet.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg
from ..errors import PriorswapError
from ..paper import PAPER
from ..vbench.settings import VideoEvalRun
from . import eval_t2i, eval_unet

DATAMODULES = {
    "food101": "Food101DataModule",
    "sun397": "SUN397DataModule",
    "caltech101": "Caltech101DataModule",
    "imagefolder": "ImageFolderDataModule",
    "fashion_mnist": "FashionMNISTDataModule",
    "hf": "HFImageDataModule",
}
EXTRACTORS = ("inception", "dinov2", "fmnist")


@dataclass(kw_only=True)
class EvalDiT:
    """``priorswap eval dit``: vanilla against swapped CFG on an exported DiT, with the callback's metrics."""

    model: str = arg(help="fine-tuned DiT pipeline folder or hub id")
    prior: str = arg(help="base model folder or hub id (the paper: {paper.prior}); 'base' for a LoRA's own base")
    data: str = arg(choices=tuple(DATAMODULES), help="reference data")
    data_root: str = arg(help="dataset folder (its validation split is the reference)")
    output_dir: str = arg(help="eval.md, eval.csv and eval_runs.csv")
    classes: list[int] | None = arg(None, help="class subset the fine-tune was trained on (relabelled 0..k-1)")
    resolution: int | None = arg(None, help="image side (default: the model's)")
    num_samples: int = arg(5000, help="samples per (scale, mode) (paper: 5000)")
    reference_samples: int | None = arg(None, help="real images for the reference statistics (default: all)")
    guidance_scale: list[float] = arg(default_factory=lambda: [PAPER["dit"].scale], help="CFG scales g")
    steps: int = arg(PAPER["dit"].steps, help="DDIM steps")
    scheduler: str = arg("ddim", choices=checks.SCHEDULERS, help="sampler")
    batch_size: int = arg(32, help="samples per forward pass")
    seed: int = arg(0, help="run r, sample i uses seed + r * num_samples + i")
    runs: int = arg(
        1,
        help="repeat with disjoint seeds; FID/FD is the minimum over runs, other metrics the mean "
        "(paper: min of 3 FID-5k runs, --runs 3)",
    )
    guide_channels: int | None = arg(None, help="guide only the first K channels (3 = the original DiT code)")
    extractor: str = arg(
        "inception",
        help="inception (FID, IS), dinov2 (FD-DINOv2), fmnist (the shipped "
        "Fashion-MNIST classifier's features) or a feature-network file",
    )
    extractor_weights: str | None = arg(
        None,
        help="local weights file of the extractor (inception: torch-fidelity's "
        "weights-inception-2015-12-05-6726825d.pth)",
    )
    classifier: str | None = arg(
        None,
        help="TorchScript/.pt2 network mapping images in [0,1] to one logit per class of the model, in its order "
        "(label accuracy), or fmnist (the shipped classifier; the model's id2label must be Fashion-MNIST's "
        "classes, or those --classes names)",
    )
    stats_cache: str = arg("~/.cache/priorswap/refstats", help="reference statistics cache folder")
    device: str = arg("auto", help="cpu, cuda or cuda:N (auto: cuda when one is available)")
    dtype: str = arg("fp32", choices=checks.DTYPE_NAMES, help="weights and activations (fp16 needs CUDA)")
    progress: bool = arg(True, flag="--no-progress", help="hide progress bars")

    def check(self) -> None:
        checks.at_least_one(
            self, "num_samples", "steps", "runs", "batch_size", "resolution", "reference_samples", "guide_channels"
        )
        checks.check_scheduler(self.scheduler)
        checks.check_scales("--guidance-scale", self.guidance_scale)
        if self.extractor.lower() not in EXTRACTORS and not os.path.isfile(os.path.expanduser(self.extractor)):
            raise PriorswapError(f"--extractor {self.extractor!r} is neither one of {', '.join(EXTRACTORS)} nor a file")
        if self.extractor_weights:
            checks.check_input_file("--extractor-weights", self.extractor_weights)
        if self.classifier and self.classifier != "fmnist":
            checks.check_input_file("--classifier", self.classifier)
        if not os.path.isdir(os.path.expanduser(self.data_root)):
            raise PriorswapError(f"--data-root {self.data_root!r} is not a folder")
        checks.check_output_dir("--output-dir", self.output_dir)
        self.device = checks.resolve_device(self.device)
        checks.check_device(self.device, self.dtype)


def run(args: EvalDiT) -> int:
    from ..launch import detect, local_device, process_group

    launch = detect()  # torchrun / srun: each process samples its rank's share; statistics are summed over ranks
    if launch is None:
        return _run(args, None)
    args.device = local_device(args.device, launch)
    with process_group(launch):
        return _run(args, launch)


def _run(args: EvalDiT, launch) -> int:
    import csv
    import importlib

    from ..core.pairing import pair
    from ..core.sampling import DTYPES, vae_decoder
    from ..evaluation import EvalSettings, combine_runs, evaluate_local, format_table, local_reference, summarise
    from ..files import write_text_atomic
    from ..launch import all_reduce_sum
    from ..metrics.factory import build_extractor, metric_name
    from .eval_checks import check_classifier_width, check_fmnist_classes, reference_note

    rank, world = (launch.rank, launch.world) if launch is not None else (0, 1)
    reduce = all_reduce_sum if launch is not None else (lambda t: t)
    os.makedirs(args.output_dir, exist_ok=True)
    extractor = build_extractor(
        args.extractor, args.extractor_weights, allow_download=True, weights_flag="as --extractor-weights FILE"
    ).to(args.device)  # weights checked first
    classifier = load_classifier_network(args.classifier, args.classes).to(args.device) if args.classifier else None
    from ..dit.load import load_dit
    from ..priors import resolve_prior

    model = load_dit(args.model, "model", DTYPES[args.dtype], args.device)
    prior = resolve_prior(model, args.prior, DTYPES[args.dtype], args.device)  # "base": a LoRA's own, free
    den = model.denoiser
    paired = pair(den, prior.denoiser, (den.sample_size, den.sample_size))
    if args.classifier == "fmnist":  # accuracy against the wrong class map would be a number without meaning
        check_fmnist_classes(args.classes, model.id2label, den.num_classes, den.name)
    dm_cls = getattr(importlib.import_module("priorswap.data"), DATAMODULES[args.data])
    resolution = args.resolution or den.sample_size * (8 if model.vae is not None else 1)
    channels = den.latent_channels if model.vae is None else int(model.vae.config.in_channels)  # as the model sees
    dm = dm_cls(
        root=args.data_root,
        resolution=resolution,
        batch_size=args.batch_size,
        num_workers=0,
        classes=args.classes,
        channels=channels,
    )
    dm.setup("validate")
    val = dm.val_dataloader()

    def to_images(batch):
        return (batch["pixels"].float() / 2 + 0.5).clamp(0, 1)

    if classifier is not None and args.classifier != "fmnist":
        first = to_images(next(b for b in val if b is not None)).to(args.device)
        check_classifier_width(classifier, first, den.num_classes, den.name, args.classifier)
    key = {
        "dataset": dm.dataset_name,
        "split": "val",
        "root": os.path.abspath(args.data_root),
        "classes": args.classes,
        "resolution": resolution,
    }
    reference = local_reference(
        extractor,
        val.dataset,
        args.reference_samples,
        key,
        args.stats_cache,
        to_images,
        val.collate_fn,
        args.batch_size,
        rank,
        world,
    ).gather(reduce, rank == 0)
    settings = EvalSettings(
        tuple(args.guidance_scale),
        args.num_samples,
        args.steps,
        args.scheduler,
        args.batch_size,
        args.seed,
        args.guide_channels,
    )
    metric = metric_name(args.extractor)
    ref_line, ref_warning = reference_note(reference.n, reference.dim, metric, args.data)
    print(ref_line, flush=True)  # before sampling: what the distance will be measured against
    decode = vae_decoder(model.vae) if model.vae is not None else None
    clf = (lambda images: classifier(images.to(args.device))) if classifier is not None else None
    runs = []
    for r in range(args.runs):  # run r draws seeds seed + r * N ... seed + (r + 1) * N - 1
        settings.seed = args.seed + r * args.num_samples
        local = evaluate_local(
            den,
            paired,
            den.num_classes,
            settings,
            model.scheduler_config,
            decode,
            extractor,
            clf,
            rank,
            world,
            progress=args.progress and rank == 0,
        )
        runs.append(summarise(local, reference, metric, reduce))
    if rank != 0:  # rank 0 prints and writes the table, the same numbers every rank holds
        return 0
    values = combine_runs(runs, metric)
    rows = format_table(values, args.guidance_scale)
    how = f", {args.runs} runs ({metric}: minimum, others: mean)" if args.runs > 1 else ""
    lines = [
        f"vanilla vs swapped CFG: model {args.model}, prior {args.prior}, {args.num_samples} samples per cell, "
        f"{args.steps} {args.scheduler} steps, guided channels: {args.guide_channels or 'all'}{how}",
        ref_line + (f". Warning: {ref_warning}" if ref_warning else ""),
        "",
        "| metric @ scale | vanilla | swapped | swapped - vanilla |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {v:.4f} | {s:.4f} | {d:+.4f} |" for name, v, s, d in rows]
    text = "\n".join(lines)
    print(text)

    def atomic(name: str, write) -> None:  # temp file + rename: a killed run never leaves half a table
        write_text_atomic(os.path.join(args.output_dir, name), write)

    def table_csv(f):
        w = csv.writer(f)
        w.writerow(["metric", "scale", "vanilla", "swapped", "swapped_minus_vanilla"])
        for name, v, s, d in rows:
            m, scale = name.split(" @ ")
            w.writerow([m, scale, v, s, d])

    def runs_csv(f):
        w = csv.writer(f)
        w.writerow(["run", "seed", "key", "value"])
        for r, vals in enumerate(runs):
            w.writerows([r, args.seed + r * args.num_samples, k, v] for k, v in sorted(vals.items()))
            w.writerow([r, args.seed + r * args.num_samples, "reference_images", reference.n])

    atomic("eval.md", lambda f: f.write(text + "\n"))
    atomic("eval.csv", table_csv)
    atomic("eval_runs.csv", runs_csv)
    print(f"wrote {os.path.join(args.output_dir, 'eval.md')}, eval.csv and eval_runs.csv (every run)")
    return 0


def load_classifier_network(ref: str, classes: list[int] | None):
    """``fmnist``: the shipped Fashion-MNIST classifier (its logits for ``classes``, relabelled 0..k-1, as the
    fine-tune is); anything else: a TorchScript/.pt2 file."""
    if ref == "fmnist":
        from ..metrics.fmnist import FMNISTSubsetClassifier

        return FMNISTSubsetClassifier(classes)
    from ..metrics import load_feature_network

    return load_feature_network(ref)


def run_video(cfg) -> int:
    from ..launch import shard_then_score
    from ..vbench.protocol import evaluate_videos

    shard_then_score(cfg, evaluate_videos)
    return 0


COMMANDS = {
    "dynamicrafter": Command(
        VideoEvalRun, run_video, "DynamiCrafter on VBench-I2V (Table 4), vanilla CFG against each VideoCrafter1 prior"
    ),
    "dit": Command(
        EvalDiT,
        run,
        "an exported DiT fine-tune (FID/FD, IS, label accuracy); also `priorswap eval --model ...`",
        context={"paper": PAPER["dit"]},
    ),
    **eval_unet.COMMANDS,
    "t2i": eval_t2i.COMMAND,
}
HELP = (
    "compare vanilla and prior-swapped CFG: dit (FID/FD, IS, accuracy), ip2p, zero123, vd, dynamicrafter (VBench-I2V), "
    "t2i (CLIP score, FID, DreamBooth CLIP-I / DINO)"
)
