"""The flags every DynamiCrafter sampling command shares (``sample dynamicrafter``, ``eval dynamicrafter``),
declared once. Only the standard library and ``argspec`` are imported, so ``--help`` stays fast."""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..argspec import arg


@dataclass(kw_only=True)
class VideoSamplingOptions:
    """The model, the sampler's length and size, and the hardware of one DynamiCrafter run."""

    model: str = arg(help="DynamiCrafter: a `priorswap convert` folder, a released .ckpt or Doubiiu/DynamiCrafter")
    steps: int = arg(50, help="DDIM steps")
    size: int | None = arg(None, help="square side in pixels (default: the model's, 256 for DynamiCrafter-256)")
    batch_size: int = arg(1, help="videos per forward pass")
    device: str = arg("auto", help="cpu, cuda or cuda:N (auto: cuda when one is available)")
    dtype: str = arg("fp32", choices=checks.DTYPE_NAMES, help="weights and activations (fp16 needs CUDA)")
    offload: bool = arg(False, help="keep each UNet on the CPU except while it runs")
    progress: bool = arg(True, flag="--no-progress", help="hide progress bars")

    def check_device(self) -> None:
        """Resolve ``auto`` and refuse a device or dtype this machine lacks (last: it may import torch)."""
        self.device = checks.resolve_device(self.device)
        checks.check_device(self.device, self.dtype)
