"""The feature networks VBench-I2V loads, read from the files VBench itself uses, so a VBench weight folder works:

- DINO ViT-B/16, ``dino_vitbase16_pretrain.pth`` (a bare state dict; facebookresearch/dino's key names, which are
  timm's): CLS token after the final LayerNorm (eps 1e-6), with DINO's own bicubic position interpolation for
  grids other than 14x14 (``vision_transformer.py`` ``interpolate_pos_encoding``). Checked once against
  facebookresearch/dino's own ``vision_transformer.py``: its ``vit_base`` state dict (150 keys) loads strictly, and
  the CLS features agree to 3.4e-6 at 224x224, 224x320 and 256x224;
- OpenAI CLIP ``ViT-B-32.pt`` / ``ViT-L-14.pt`` (TorchScript archives with fp16 weights; only their tensors are
  read, into open_clip's rebuild of the OpenAI architecture, in fp32 as ``clip.load`` does on a CPU);
- the LAION aesthetic head ``sa_0_4_vit_l_14_linear.pth``, a bare ``Linear(768, 1)`` state dict.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PriorswapError
from ..metrics.extractor import load_exactly, load_state_dict_file, require_file


class DINOFeatures(nn.Module):
    """DINO ViT-B/16 (timm's ``vit_base_patch16_224`` with DINO's weights); ``forward`` (B, 3, H, W) -> (B, 768)."""

    def __init__(self, weights: str):
        super().__init__()
        import timm  # each network's library loads only with the dimension that uses it

        path = require_file(weights, "DINO weights", "expected dino_vitbase16_pretrain.pth (facebookresearch/dino)")
        state = load_state_dict_file(path)
        self.vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
        load_exactly(self.vit, state, f"DINO weights {path!r} do not fit DINO ViT-B/16")
        self.vit.eval().requires_grad_(False)

    def _pos_embed(self, npatch: int, rows: int, cols: int) -> Tensor:
        """DINO's ``interpolate_pos_encoding``: the 14x14 table resized bicubically by scale factors with DINO's
        +0.1 offset (so the output is exactly rows x cols)."""
        pos = self.vit.pos_embed
        n = pos.shape[1] - 1
        if npatch == n and rows == cols:
            return pos
        side, dim = int(math.sqrt(n)), pos.shape[-1]
        r0, c0 = rows + 0.1, cols + 0.1
        grid = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=(r0 / math.sqrt(n), c0 / math.sqrt(n)), mode="bicubic")
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([pos[:, :1], grid], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        v = self.vit
        tokens = v.patch_embed.proj(x)  # (B, 768, rows, cols)
        rows, cols = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = torch.cat([v.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self._pos_embed(rows * cols, rows, cols)
        for block in v.blocks:
            tokens = block(tokens)
        return v.norm(tokens)[:, 0]


def load_openai_clip(path: str, what: str = "CLIP weights"):
    """An OpenAI CLIP (``ViT-B-32.pt``, ``ViT-L-14.pt``): a TorchScript archive as released, or a plain state dict
    with the same keys. Only the tensors are taken; the model is open_clip's rebuild of the OpenAI architecture
    (QuickGELU), in fp32 (``clip.load`` upcasts the fp16 release weights the same way on a CPU)."""
    from open_clip.model import build_model_from_openai_state_dict  # only the CLIP dimensions need open_clip

    path = require_file(path, what, "expected OpenAI's ViT-B-32.pt / ViT-L-14.pt (the files VBench's clip.load reads)")
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript, but it is the format OpenAI released
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
            state = torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        state = load_state_dict_file(path)
    try:
        model = build_model_from_openai_state_dict(dict(state))
    except (KeyError, RuntimeError) as e:
        raise PriorswapError(
            f"{what} {path!r} is not an OpenAI CLIP checkpoint ({str(e).splitlines()[0][:120]})"
        ) from None
    return model.float().eval().requires_grad_(False)


class AestheticHead(nn.Module):
    """LAION's aesthetic predictor v1 on CLIP ViT-L/14: ``Linear(768, 1)`` on the L2-normalised image embedding."""

    def __init__(self, weights: str):
        super().__init__()
        path = require_file(
            weights, "aesthetic head", "expected sa_0_4_vit_l_14_linear.pth (LAION aesthetic predictor)"
        )
        state = load_state_dict_file(path)
        w = state.get("weight")
        self.linear = nn.Linear(w.shape[1] if w is not None and w.ndim == 2 else 768, 1)  # 768: CLIP ViT-L/14
        load_exactly(self.linear, state, f"aesthetic head {path!r} is not a Linear(768, 1) state dict", width=120)
        self.eval().requires_grad_(False)

    def forward(self, embedding: Tensor) -> Tensor:
        return self.linear(F.normalize(embedding.float(), dim=-1, p=2)).squeeze(-1)


def load_musiq(weights: str):
    """pyiqa's MUSIQ with the SPAQ weights VBench loads (``musiq_spaq_ckpt-358bb6af.pth``; one output, the MOS).

    Read with ``torch.load(weights_only=True)`` and loaded strictly here (pyiqa's own loader would unpickle
    anything). As VBench does (``vbench/imaging_quality.py`` 64) only the top-level ``training`` flag is cleared,
    which makes ``MUSIQ.forward`` apply its own preprocessing ((x - 0.5) * 2 and the multiscale patches)."""
    try:
        from pyiqa.archs.musiq_arch import MUSIQ
    except ImportError:
        raise PriorswapError("imaging_quality needs pyiqa (MUSIQ): pip install 'priorswap[vbench]'") from None
    path = require_file(
        weights, "MUSIQ weights", "expected musiq_spaq_ckpt-358bb6af.pth (pyiqa's MUSIQ trained on SPAQ)"
    )
    state = load_state_dict_file(path)
    state = state.get("params", state) if isinstance(state.get("params"), dict) else state
    model = MUSIQ(pretrained=False)
    load_exactly(model, state, f"MUSIQ weights {path!r} do not fit pyiqa's MUSIQ (SPAQ)")
    model.requires_grad_(False)
    model.training = False
    return model
