"""``ProtocolRun``: everything one protocol run takes, as typed fields. It is both the Python API of
:func:`~priorswap.toolkit.protocols.runner.evaluate_protocol` and the declaration of ``priorswap eval
ip2p|zero123|vd`` (each field is a flag; see ``priorswap.toolkit.argspec``)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..argspec import arg
from ..errors import PriorswapError
from ..paper import PAPER

KINDS = ("ip2p", "zero123", "vd")
DEFAULT_METRICS = {
    "zero123": ("lpips", "psnr", "ssim"),
    "vd": ("fid", "fd_dinov2", "clip_i", "dino_sim"),
    "ip2p": ("clip_i", "clip_t", "clip_d"),
}
ALLOWED = {
    "zero123": ("lpips", "psnr", "ssim", "clip_i", "dino_sim"),
    "vd": ("fid", "fd_dinov2", "clip_i", "dino_sim"),
    "ip2p": ("clip_i", "clip_t", "clip_d", "dino_sim", "imagereward", "pickscore"),
}
METRIC_NETS = "metric networks (local files work offline)"


def parse_shard(text: str | tuple[int, int]) -> tuple[int, int]:
    if isinstance(text, tuple):
        return text
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise PriorswapError(f"--shard {text!r} is not K/N (e.g. 0/4)") from None
    return k, n


def shard_arg(help: str):
    """``--shard K/N``: read as a string, parsed into (K, N) by :func:`parse_shard`."""
    return arg(None, type=str, parse=parse_shard, metavar="K/N", help=help)


def check_shard(shard: tuple[int, int] | None) -> None:
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise PriorswapError(f"--shard {shard[0]}/{shard[1]} is invalid; expected K/N with 0 <= K < N")


def check_metrics(kind: str, metrics: list[str] | None) -> tuple[str, ...]:
    chosen = tuple(metrics) if metrics else DEFAULT_METRICS[kind]
    bad = [m for m in chosen if m not in ALLOWED[kind]]
    if bad:
        raise PriorswapError(f"metric {bad[0]!r} is not available for {kind}; choose from {', '.join(ALLOWED[kind])}")
    return chosen


@dataclass(kw_only=True)
class ProtocolRun:
    """Defaults are the paper's (appendix B); ``None`` means "the paper's value for ``kind``"."""

    kind: str  # "ip2p", "zero123" or "vd" (the sub-command)
    model: str = arg(help="fine-tune folder or hub id (e.g. {paper.model})")
    data: str = arg(help="{data_help}")
    output_dir: str = arg(help="samples/, eval.md, eval.csv, items.csv; re-running resumes")
    priors: list[str] = arg(
        default_factory=list,
        flag="--prior",
        append=True,
        metavar="[NAME=]REF",
        help="a prior (repeat for several); each gets a table row next to vanilla CFG",
    )
    guidance_scales: list[float] = arg(
        default_factory=list,
        flag="--guidance-scale",
        kinds=("zero123", "vd"),
        help="CFG scales (default {paper.scale})",
    )
    image_guidance: list[float] = arg(
        default_factory=lambda: [PAPER["ip2p"].image_scale], kinds=("ip2p",), help="gI values"
    )
    text_guidance: list[float] = arg(
        default_factory=lambda: [PAPER["ip2p"].text_scale], kinds=("ip2p",), help="gT values"
    )
    metrics: list[str] | None = arg(None, help="a subset of {allowed} (default {metrics})")
    num_samples: int = arg(1, help="samples per item")
    limit: int | None = arg(
        None, help="use this many items (input images), drawn at random with --seed (paper: 30000 for vd)"
    )
    size: int | None = arg(None, help="square size in pixels (default {size_help})")
    reference_view: int = arg(0, kinds=("zero123",), help="view used as the condition in object folders")
    reference: str | None = arg(
        None,
        kinds=("vd",),
        help="folder of real images for FID / FD-DINOv2 (default: --data; paper: all of COCO val2014)",
    )
    reference_limit: int | None = arg(None, kinds=("vd",), help="use only the first N reference images (sorted)")
    steps: int | None = arg(None, help="DDIM steps (default {paper.steps})")
    scheduler: str = arg("ddim", choices=checks.SCHEDULERS, help="sampler")
    seed: int = arg(0, help="sample k of item i uses seed + i * num_samples + k")
    batch_size: int = arg(8, help="samples per forward pass")
    device: str = arg("auto", help="cpu, cuda or cuda:N (auto: cuda when one is available)")
    dtype: str = arg("fp32", choices=checks.DTYPE_NAMES, help="weights and activations (fp16 needs CUDA)")
    offload: bool = arg(False, help="keep every network on the CPU except while it runs")
    shard: tuple[int, int] | None = shard_arg(
        "sample only items i with i % N == K (one process per GPU), then run without it to score"
    )
    clip: str | None = arg(
        "openai/clip-vit-large-patch14", group=METRIC_NETS, help="CLIPModel folder or hub id for CLIP-I/T/D"
    )
    lpips_net: str = arg("alex", choices=("alex", "vgg", "squeeze"), group=METRIC_NETS, help="LPIPS backbone")
    lpips_weights: str | None = arg(
        None, group=METRIC_NETS, help="torchvision ImageNet state dict of the LPIPS backbone (default: torch hub cache)"
    )
    inception_weights: str | None = arg(
        None,
        group=METRIC_NETS,
        help="FID Inception weights for FID: torch-fidelity's "
        "weights-inception-2015-12-05-6726825d.pth (default: torch hub cache)",
    )
    dinov2_weights: str | None = arg(
        None, group=METRIC_NETS, help="DINOv2 ViT-L/14 weights (timm safetensors) for FD-DINOv2 and DINOv2 similarity"
    )
    dinov2_model: str | None = arg(
        None, group=METRIC_NETS, help="timm model name of the DINOv2 network (default vit_large_patch14_dinov2.lvd142m)"
    )
    dinov2_size: int | None = arg(None, group=METRIC_NETS, help="DINOv2 input size (default 224)")
    pickscore: str | None = arg(
        "yuvalkirstain/PickScore_v1",
        kinds=("ip2p",),
        group=METRIC_NETS,
        help="PickScore CLIPModel folder or hub id (metric pickscore)",
    )
    pickscore_processor: str | None = arg(
        "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        kinds=("ip2p",),
        group=METRIC_NETS,
        help="its CLIPProcessor folder or hub id",
    )
    imagereward_weights: str | None = arg(
        None,
        kinds=("ip2p",),
        group=METRIC_NETS,
        help="ImageReward-v1.0's ImageReward.pt (metric imagereward; default: THUDM/ImageReward from the hub)",
    )
    imagereward_config: str | None = arg(
        None,
        kinds=("ip2p",),
        group=METRIC_NETS,
        help="its BLIP med_config.json (default: the one beside --imagereward-weights, else the hub's)",
    )
    imagereward_tokenizer: str | None = arg(
        "bert-base-uncased",
        kinds=("ip2p",),
        group=METRIC_NETS,
        help="BERT tokenizer folder or hub id for ImageReward",
    )
    stats_cache: str | None = arg("~/.cache/priorswap/refstats", help="reference statistics cache folder")
    progress: bool = arg(True, flag="--no-progress", help="hide progress bars")

    def __post_init__(self) -> None:
        if self.shard is not None:
            self.shard = parse_shard(self.shard)

    @property
    def paper(self):
        return PAPER[self.kind]

    def resolved_steps(self) -> int:
        return self.steps or self.paper.steps

    def check(self) -> None:
        """Cheap argument checks, before reading data or loading anything (the device check last: it may import torch)."""
        if self.kind not in KINDS:
            raise PriorswapError(f"unknown kind {self.kind!r}; expected {', '.join(KINDS)}")
        checks.check_scheduler(self.scheduler)
        check_metrics(self.kind, self.metrics)
        checks.at_least_one(self, "num_samples", "batch_size", "steps", "limit", "size", "reference_limit")
        checks.check_scales("--guidance-scale", self.guidance_scales)
        checks.check_scales("--image-guidance", self.image_guidance if self.kind == "ip2p" else None)
        checks.check_scales("--text-guidance", self.text_guidance if self.kind == "ip2p" else None)
        check_shard(self.shard)
        checks.check_output_dir("--output-dir", self.output_dir)
        self.device = checks.resolve_device(self.device)
        checks.check_device(self.device, self.dtype)
