"""The video family's run, with the verbs every family has: load -> prepare -> rows.

:func:`prepare_video` is the one entry a command calls: it checks the DDIM grid and (for a converted folder) the
size before any weights load, loads DynamiCrafter and the VideoCrafter1 prior, and encodes the conditions once; the
:class:`priorswap.toolkit.video.pipeline.PreparedVideo` it returns yields the vanilla and swapped videos.
"""

from __future__ import annotations

import torch

from .ddim import ddim_timesteps
from .loading import load_video_model, peek_config
from .pipeline import PreparedVideo, VideoJob, check_size, prepare


def prepare_video(model: str, prior: str | None, job: VideoJob, dtype: torch.dtype | None = None) -> PreparedVideo:
    """DynamiCrafter ``model`` and VideoCrafter1 ``prior`` (None: vanilla only) loaded in ``dtype`` (on the CPU
    with ``job.offload``, else on ``job.device``) and prepared for ``job``; a grid or size they cannot run fails first."""
    ddim_timesteps(job.spacing, job.steps)  # a grid upstream cannot run fails before any loading
    known = peek_config(model)  # a converted folder: check the size before loading any weights
    if known is not None and job.size is not None:
        check_size(known, job.size)
    home = "cpu" if job.offload else job.device
    dc = load_video_model(model, "dynamicrafter", "model", dtype, home)
    vc = load_video_model(prior, "videocrafter", "prior", dtype, home) if prior else None
    return prepare(dc, vc, job)
