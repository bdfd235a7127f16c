"""OpenCLIP text and image towers as DynamiCrafter and VideoCrafter1 use them, on a current open_clip.

Upstream (``lvdm/modules/encoders/condition.py``) needs open_clip 2.22, whose transformers run sequence-first
(LND); open_clip 3.x runs batch-first (NLD). The maths here is upstream's, written for the batch-first layout.
Nothing is downloaded: towers are built from an open_clip config dict and get their weights from a checkpoint.
"""

from __future__ import annotations

import inspect
import os
from typing import Literal, Sequence

import kornia
import open_clip
import torch
from open_clip.model import CLIP
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from ..errors import PriorswapError

# condition.py 318-319: the CLIP normalisation FrozenOpenCLIPImageEmbedderV2 applies after (x + 1) / 2
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_INPUT_SIZE = (224, 224)  # condition.py 324: the resize is hard-coded, whatever the tower's image_size
TEXT_PARTS = ("token_embedding", "positional_embedding", "ln_final", "text_projection", "logit_scale", "logit_bias")


def openclip_config(arch: str, extra_config_file: str | None = None) -> dict:
    """The model config of a registered open_clip architecture, after registering ``extra_config_file`` if given."""
    if arch.startswith("hf-hub:"):
        raise PriorswapError(
            f"open_clip arch {arch!r} would be fetched from the hub; pass a registered name or a JSON file"
        )
    if extra_config_file is not None:
        if not os.path.isfile(extra_config_file):
            raise PriorswapError(f"open_clip config file {extra_config_file!r} does not exist")
        open_clip.add_model_config(extra_config_file)  # registered under the file's stem
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise PriorswapError(
            f"unknown open_clip arch {arch!r}; pass its JSON as extra_config_file or use one of open_clip.list_models()"
        )
    return cfg


def build_openclip(cfg: dict) -> CLIP:
    """A randomly initialised ``open_clip.model.CLIP`` from a model-config dict (no pretrained weights, no download)."""
    accepted = set(inspect.signature(CLIP.__init__).parameters) - {"self"}
    unknown = sorted(set(cfg) - accepted)
    if unknown:
        # e.g. custom_text (CustomTextCLIP) or multimodal_cfg (CoCa): other classes whose text tower sits elsewhere
        raise PriorswapError(
            f"open_clip config keys {unknown} are not CLIP arguments; only plain CLIP towers (as DynamiCrafter's ViT-H-14) are supported"
        )
    return CLIP(**cfg)


def _adopt(owner: nn.Module, clip: CLIP, names: Sequence[str]) -> None:
    """Make ``clip``'s parts ``owner``'s own, so ``owner.state_dict()`` has the checkpoint's key names."""
    for name in names:
        setattr(owner, name, getattr(clip, name))  # modules and parameters register; a None stays a plain attribute


class OpenCLIPTextEncoder(nn.Module):
    """Per-token text features (B, 77, width) as upstream ``FrozenOpenCLIPEmbedder`` (condition.py 174-229).

    Holds the CLIP without ``visual`` (upstream deletes it, condition.py 189), so ``state_dict()`` is the
    checkpoint's ``cond_stage_model.model.*`` with that prefix stripped.
    """

    def __init__(self, clip: CLIP, layer: Literal["last", "penultimate"] = "penultimate"):
        super().__init__()
        if layer not in ("last", "penultimate"):
            raise PriorswapError(f"text layer {layer!r} is not supported; use 'last' or 'penultimate'")
        self.layer = layer
        self.context_length: int = int(clip.context_length)
        _adopt(self, clip, ("transformer", *TEXT_PARTS))
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)  # causal, -inf above the diagonal
        self.eval().requires_grad_(False)  # upstream freezes the tower (condition.py 204-207)

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Token ids (B, 77): lower-cased, SOT 49406, EOT 49407, padded with 0 (condition.py 210)."""
        return open_clip.tokenize(list(texts), context_length=self.context_length)

    def forward(self, token_ids: Tensor) -> Tensor:
        # condition.py 214-229: embeddings, all blocks but the last `layer_idx`, then ln_final on all 77 positions
        x = self.token_embedding(token_ids) + self.positional_embedding  # (B, 77, W)
        blocks = self.transformer.resblocks
        n = len(blocks) - (1 if self.layer == "penultimate" else 0)
        if not self.transformer.batch_first:
            x = x.transpose(0, 1)  # (77, B, W)
        for block in blocks[:n]:
            x = block(x, attn_mask=self.attn_mask)
        if not self.transformer.batch_first:
            x = x.transpose(0, 1)  # (B, 77, W)
        return self.ln_final(x)  # (B, 77, W)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Tensor:
        """Text features (B, 77, width) of ``texts``; the null text of ``uncond_type: empty_seq`` is ``""``."""
        return self(self.tokenize(texts).to(self.positional_embedding.device))


class OpenCLIPImageEncoder(nn.Module):
    """All ViT tokens (B, 1 + grid², width) as upstream ``FrozenOpenCLIPImageEmbedderV2`` (condition.py 295-372).

    Holds the CLIP without its text ``transformer`` (upstream deletes only that, condition.py 305), so
    ``state_dict()`` is the checkpoint's ``embedder.model.*`` with that prefix stripped: the vision tower plus
    the unused text leftovers.
    """

    def __init__(self, clip: CLIP):
        super().__init__()
        if not isinstance(clip.visual, VisionTransformer):
            raise PriorswapError(
                f"the image tower is {type(clip.visual).__name__}; DynamiCrafter's image tokens need an open_clip VisionTransformer"
            )
        _adopt(self, clip, ("visual", *TEXT_PARTS))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD), persistent=False)
        self.eval().requires_grad_(False)  # upstream freezes the tower (condition.py 332-335)

    def preprocess(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> CLIP input (B, 3, 224, 224), as upstream ``preprocess`` (condition.py 322-330).

        kornia's antialias blurs only when downscaling; 64 -> 224 is a plain bicubic upsample.
        """
        x = kornia.geometry.resize(images, CLIP_INPUT_SIZE, interpolation="bicubic", align_corners=True, antialias=True)
        x = (x + 1.0) / 2.0
        return kornia.enhance.normalize(x, self.mean, self.std)

    def forward(self, images: Tensor) -> Tensor:
        # condition.py 342-372: the ViT's hidden states of every token, without ln_post and without proj
        v = self.visual
        x = v.conv1(self.preprocess(images))  # (B, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g², W)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, W)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # (B, 1 + g², W)
        x = v.ln_pre(v.patch_dropout(x))
        return v.transformer(x)  # (B, 1 + g², W); open_clip's Transformer handles its own layout
