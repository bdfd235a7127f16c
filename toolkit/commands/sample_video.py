"""``priorswap sample dynamicrafter``: image + prompt -> 16-frame videos, vanilla and with VideoCrafter1's prior.

Writes into ``--output-dir``: ``input.png`` (the image as the model saw it), ``vanilla/NNN.mp4`` and
``swapped/NNN.mp4`` (H.264), ``vanilla/NNN.png`` / ``swapped/NNN.png`` (every frame left to right, lossless),
``compare.mp4`` and ``compare.gif`` (vanilla beside swapped, one row per sample) and ``meta.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg
from ..errors import PriorswapError
from ..video.config import SPACINGS
from ..video.options import VideoSamplingOptions


@dataclass(kw_only=True)
class SampleDynamiCrafter(VideoSamplingOptions):
    image: str = arg(help="the conditioning image (any mode and size Pillow reads; resized and centre-cropped)")
    prompt: str = arg(help="the text prompt (empty is allowed: it is the null text)")
    output_dir: str = arg(help="folder for input.png, vanilla/, swapped/, compare.mp4, compare.gif, meta.json")
    prior: str | None = arg(
        None,
        help='VideoCrafter1 T2V (folder, .ckpt or VideoCrafter/Text2Video-512) whose e(x_t, "") replaces '
        "DynamiCrafter's e(null text, null image); omit for vanilla only",
    )
    num_samples: int = arg(1, help="videos per mode; sample i uses seed + i")
    frame_stride: int = arg(3, help="frame stride fs (DynamiCrafter-256's motion control)")
    eta: float = arg(1.0, help="DDIM eta (1.0 as the released scripts; 0 is deterministic)")
    text_guidance: float = arg(7.5, help="gT (Eq. 8), or the single CFG scale without --image-guidance")
    image_guidance: float | None = arg(
        None,
        help="gI (Eq. 8; the paper uses 1.5): dual CFG; omit for single CFG, whose unconditional branch drops "
        "text and image together",
    )
    timestep_spacing: str = arg("uniform", choices=SPACINGS, help="upstream's DDIM grid (uniform: t = 1, 21, ..., 981)")
    fps: float = arg(8.0, help="frame rate of the written videos")
    seed: int = arg(0, help="sample i uses seed + i")
    compare: bool = arg(True, flag="--no-vanilla", help="with --prior: skip the vanilla videos")

    def check(self) -> None:
        checks.at_least_one(self, "num_samples", "steps", "batch_size", "size", "frame_stride")
        checks.check_scales("--text-guidance", self.text_guidance)
        checks.check_scales("--image-guidance", self.image_guidance)
        if self.eta < 0:
            raise PriorswapError(f"--eta must be at least 0, got {self.eta}")
        if self.fps <= 0:
            raise PriorswapError(f"--fps must be positive, got {self.fps}")
        if not self.compare and not self.prior:
            raise PriorswapError("--no-vanilla needs --prior")
        checks.check_input_file("--image", self.image)
        checks.check_output_dir("--output-dir", self.output_dir)
        self.check_device()
        if not self.progress:
            from .common import hide_library_progress

            hide_library_progress()


def run(cfg: SampleDynamiCrafter) -> int:
    from ..core.sampling import DTYPES
    from ..images import read_image
    from ..video.pipeline import VideoJob
    from ..video.run import prepare_video
    from ..video.writer import write_outputs

    job = VideoJob.from_flags(cfg, read_image(cfg.image), cfg.prompt, cfg.num_samples, cfg.seed)
    prepared = prepare_video(cfg.model, cfg.prior, job, DTYPES[cfg.dtype])
    videos = prepared.videos(cfg.compare)
    write_outputs(cfg.output_dir, prepared.encoded["input"], videos, cfg.fps, cfg.seed, dict(vars(cfg)))
    print(f"wrote {cfg.num_samples} x {' + '.join(videos)} videos, compare.mp4 and compare.gif to {cfg.output_dir}")
    return 0


COMMAND = Command(
    SampleDynamiCrafter,
    run,
    "DynamiCrafter image-to-video (Eq. 8 dual CFG; only e(null, null) is swapped for VideoCrafter1's)",
)
