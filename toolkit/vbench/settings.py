"""``VideoEvalRun``: everything ``priorswap eval dynamicrafter`` takes, as typed fields (also its Python API)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..argspec import arg
from ..errors import PriorswapError
from ..protocols.settings import check_shard, parse_shard, shard_arg
from ..video.config import SPACINGS
from ..video.options import VideoSamplingOptions
from .suite import DIMENSIONS

NETS = "VBench's weight files (the names VBench itself loads)"
BUILT = {  # dimension -> the weight flags it needs
    "subject_consistency": ("dino_weights",),
    "background_consistency": ("clip_b32",),
    "temporal_flickering": (),
    "motion_smoothness": ("amt_weights",),
    "dynamic_degree": ("raft_weights",),
    "aesthetic_quality": ("clip_l14", "aesthetic_head"),
    "i2v_subject": ("dino_weights",),
    "imaging_quality": ("musiq_weights",),
    "i2v_background": ("dreamsim_weights",),
}
NOT_BUILT = {  # dimension -> why it is not computed yet (shown in eval.md, never silently absent)
}
FILES = {
    "dino_weights": "dino_vitbase16_pretrain.pth",
    "clip_b32": "ViT-B-32.pt",
    "clip_l14": "ViT-L-14.pt",
    "aesthetic_head": "sa_0_4_vit_l_14_linear.pth",
    "raft_weights": "raft-things.pth",
    "musiq_weights": "musiq_spaq_ckpt-358bb6af.pth",
    "amt_weights": "amt-s.pth",
    "dreamsim_weights": (
        "DreamSim's cache folder: checkpoints/dino_vitbase16_pretrain.pth, clip_vitb16_pretrain.pth.tar, "
        "open_clip_vitb16_pretrain.pth.tar, ensemble_lora/"
    ),
}


def _dreamsim_folder(path: str) -> None:
    from .dreamsim import check_folder  # dreamsim.py needs torch; this file is read for --help

    check_folder(path)


FOLDERS = {"dreamsim_weights": _dreamsim_folder}  # weight flags that name a folder -> its check


@dataclass(kw_only=True)
class VideoEvalRun(VideoSamplingOptions):
    """Defaults are the paper's Table 4 setting (dual CFG, gT 7.5, gI 1.5, DDIM 50, eta 1, fs 3) and VBench's."""

    data: str = arg(
        help="the VBench-I2V suite folder (vbench2_i2v_full_info.json + crop/1-1/) or a .jsonl/.csv manifest of "
        "image, prompt"
    )
    output_dir: str = arg(help="videos/<method>/{{prompt}}-{{k}}.mp4, eval.md, eval.csv, items.csv; re-running resumes")
    priors: list[str] = arg(
        default_factory=list,
        flag="--prior",
        append=True,
        metavar="[NAME=]REF",
        help="a VideoCrafter1 prior (repeat for several); each gets a column next to vanilla",
    )
    videos_per_prompt: int = arg(5, help="videos per prompt (VBench: 5)")
    limit: int | None = arg(None, help="use this many prompts, drawn at random with --seed")
    dimensions: list[str] | None = arg(
        None, metavar="DIM", help=f"a subset of the dimensions: {', '.join(DIMENSIONS)} (default: all nine)"
    )
    eta: float = arg(1.0, help="DDIM eta")
    text_guidance: float = arg(7.5, help="gT")
    image_guidance: float = arg(1.5, help="gI (dual CFG, the paper's Eq. 8)")
    frame_stride: int = arg(3, help="frame stride fs")
    timestep_spacing: str = arg("uniform", choices=SPACINGS, help="upstream's DDIM grid")
    fps: float = arg(
        8.0, help="frame rate the videos are written at; Dynamic Degree reads each file's own rate, as VBench does"
    )
    seed: int = arg(0, help="video k of prompt i uses seed + i * videos_per_prompt + k")
    shard: tuple[int, int] | None = shard_arg("sample only prompts i with i % N == K, then run without it to score")
    dino_weights: str | None = arg(None, group=NETS, help="DINO ViT-B/16: dino_vitbase16_pretrain.pth")
    clip_b32: str | None = arg(None, group=NETS, help="OpenAI CLIP ViT-B/32: ViT-B-32.pt")
    clip_l14: str | None = arg(None, group=NETS, help="OpenAI CLIP ViT-L/14: ViT-L-14.pt")
    aesthetic_head: str | None = arg(None, group=NETS, help="LAION aesthetic head: sa_0_4_vit_l_14_linear.pth")
    raft_weights: str | None = arg(None, group=NETS, help="RAFT (things): raft-things.pth")
    amt_weights: str | None = arg(None, group=NETS, help="AMT-S frame interpolator (motion smoothness): amt-s.pth")
    musiq_weights: str | None = arg(None, group=NETS, help="MUSIQ (SPAQ, pyiqa): musiq_spaq_ckpt-358bb6af.pth")
    dreamsim_weights: str | None = arg(
        None,
        group=NETS,
        help="DreamSim (ensemble): the folder dreamsim(pretrained=True, cache_dir=DIR) fills (dreamsim 0.2.1)",
    )

    def __post_init__(self) -> None:
        if self.shard is not None:
            self.shard = parse_shard(self.shard)

    def chosen(self) -> tuple[str, ...]:
        return tuple(self.dimensions) if self.dimensions else tuple(d for d in DIMENSIONS if d in BUILT)

    def check(self) -> None:
        checks.at_least_one(self, "videos_per_prompt", "limit", "steps", "batch_size", "frame_stride", "size")
        checks.check_scales("--text-guidance", self.text_guidance)
        checks.check_scales("--image-guidance", self.image_guidance)
        for d in self.chosen():
            if d in NOT_BUILT:
                raise PriorswapError(f"dimension {d!r} is not available yet: it {NOT_BUILT[d]}")
            if d not in BUILT:
                raise PriorswapError(f"unknown dimension {d!r}; choose from {', '.join(BUILT)}")
        if not self.shard:  # a shard only samples; the scoring run needs the weights
            for d in self.chosen():
                for name in BUILT[d]:
                    path = getattr(self, name)
                    flag = "--" + name.replace("_", "-")
                    if path is None:
                        raise PriorswapError(f"{d} needs {flag} ({FILES[name]}, as VBench loads it)")
                    if name in FOLDERS:
                        FOLDERS[name](path)
                    else:
                        checks.check_input_file(flag, path)
        check_shard(self.shard)
        checks.check_output_dir("--output-dir", self.output_dir)
        self.check_device()
