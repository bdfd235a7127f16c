"""The one feature-extractor interface every distribution metric (FID, FD-DINOv2, IS) goes through.

An extractor owns its preprocessing: it takes images in [0, 1], (B, 1|3, H, W), and returns (B, dim)
features. ``name`` identifies network *and* weights, because it keys on-disk reference statistics.
"""

from __future__ import annotations

import hashlib
import os

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import PriorswapError


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate a (B, 1|3, H, W) float batch in [0, 1] and return it as RGB (grey repeated 3 times)."""
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise PriorswapError(f"images have shape {shape}; expected a (B, 1 or 3, H, W) tensor")
    if not images.is_floating_point():
        raise PriorswapError(f"images have dtype {images.dtype}; expected floats in [0, 1]")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise PriorswapError(
            f"image values span [{lo:.3g}, {hi:.3g}]; expected [0, 1] (map [-1, 1] with x * 0.5 + 0.5)"
        )
    images = images.clamp(0, 1)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def require_file(path: str | os.PathLike, what: str, hint: str) -> str:
    """``path`` as a string if it is an existing file; otherwise a one-line error with ``hint``."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise PriorswapError(f"{what} {path!r} is not a file; {hint}")
    return path


def file_fingerprint(path: str) -> str:
    """8 hex chars from the file size and its first MiB: cheap, yet tells apart two weight files."""
    h = hashlib.sha256(str(os.path.getsize(path)).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return h.hexdigest()[:8]


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (loaded with ``weights_only=True``)."""
    try:
        if path.endswith(".safetensors"):
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PriorswapError(
            f"weights file {path!r} could not be read ({type(e).__name__}); expected a .safetensors or torch.save state dict"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PriorswapError(f"weights file {path!r} holds a {type(state).__name__}; expected a state dict")
    return state


def load_exactly(module: nn.Module, state: dict[str, torch.Tensor], problem: str, width: int = 150) -> None:
    """``module.load_state_dict(state, strict=True)``; a file that does not fit is a one-line error: ``problem``,
    then the first line of torch's own message (cut at ``width`` characters)."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise PriorswapError(f"{problem} ({str(e).splitlines()[0][:width]})") from None


def _eval(module: nn.Module) -> nn.Module:
    """Eval mode where the module allows it (an exported program's module has no train/eval switch)."""
    try:
        module.eval()
    except (NotImplementedError, RuntimeError):
        pass
    return module


class FeatureExtractor(nn.Module):
    """Images in [0, 1] -> (B, dim) features. Subclasses set ``name`` and ``dim`` and implement ``features``.

    ``logits`` is optional (only Inception has class logits, for the Inception Score).
    It never leaves eval mode: a parent's ``.train()`` (Lightning calls it on every fit) would otherwise
    switch BatchNorm/dropout inside the frozen network and silently change every feature.
    """

    name: str = "abstract"
    dim: int = 0

    def train(self, mode: bool = True) -> "FeatureExtractor":
        self.training = False
        for child in self.children():
            _eval(child)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(check_images(images).to(self.device))  # (B, dim)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], already checked and on ``self.device`` -> (B, dim)."""
        raise NotImplementedError

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise PriorswapError(
            f"feature extractor {self.name!r} has no class logits; the Inception Score needs extractor 'inception'"
        )

    @property
    def device(self) -> torch.device:
        p = next(iter(self.parameters()), None)
        return p.device if p is not None else torch.device("cpu")


class ModuleExtractor(FeatureExtractor):
    """Wrap a user's network that maps (B, 3, H, W) images in [0, 1] to (B, dim) features.

    The network does its own normalisation; ``image_size`` optionally resizes (bilinear, antialiased) first.
    """

    def __init__(self, module: nn.Module, dim: int, name: str, image_size: int | None = None):
        super().__init__()
        if int(dim) <= 0:
            raise PriorswapError(f"feature dim {dim!r} is not positive; expected the width of the network's output")
        self.module, self.dim, self.name, self.image_size = module, int(dim), str(name), image_size
        for p in module.parameters():  # not module.requires_grad_: ScriptModules refuse it
            p.requires_grad_(False)
        _eval(module)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.image_size is not None:
            images = nn.functional.interpolate(
                images, size=(self.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
        out = self.module(images)
        out = out.flatten(1) if out.ndim > 2 else out  # (B, dim)
        if out.ndim != 2 or out.shape[1] != self.dim:
            raise PriorswapError(
                f"feature network {self.name!r} returned shape {tuple(out.shape)}; expected (B, {self.dim})"
            )
        return out.float()

    @property
    def device(self) -> torch.device:
        p = next(iter(self.module.parameters()), None)
        if p is None:
            p = next(iter(self.module.buffers()), None)
        return p.device if p is not None else torch.device("cpu")


def load_feature_network(
    path_or_module: str | os.PathLike | nn.Module,
    dim: int | None = None,
    name: str | None = None,
    image_size: int | None = None,
) -> ModuleExtractor:
    """A user-provided feature network as an extractor.

    Accepts an ``nn.Module`` or the path of a file that carries its own architecture, so no Python class has to
    be importable and loading runs no pickled code: a ``torch.export.save`` program (``.pt2``; export it with a
    dynamic batch dimension) or a TorchScript file (``torch.jit.save``, any other suffix; deprecated by torch, still read).
    ``dim`` is inferred from one forward pass on a 2x3x64x64 grey batch when not given.
    """
    if isinstance(path_or_module, nn.Module):
        module, default_name = path_or_module, f"module-{type(path_or_module).__name__}"
    else:
        expected = "expected a torch.export .pt2 program or a TorchScript file (torch.jit.save)"
        path = require_file(path_or_module, "feature network", expected)
        exported = path.endswith(".pt2")
        try:
            module = torch.export.load(path).module() if exported else torch.jit.load(path, map_location="cpu")
        except Exception as e:
            kind = "torch.export program" if exported else "TorchScript file"
            raise PriorswapError(
                f"feature network {path!r} is not a loadable {kind} ({type(e).__name__}); {expected}"
            ) from None
        stem = os.path.splitext(os.path.basename(path))[0]
        default_name = f"{'exported' if exported else 'torchscript'}-{stem}-{file_fingerprint(path)}"
    if dim is None:
        p = next(iter(module.parameters()), None)
        probe = torch.full((2, 3, image_size or 64, image_size or 64), 0.5, device=p.device if p is not None else "cpu")
        with torch.no_grad():
            dim = int(_eval(module)(probe).flatten(1).shape[1])
    return ModuleExtractor(module, dim, name or default_name, image_size)
