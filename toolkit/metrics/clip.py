"""CLIP similarities for image-conditioned and editing evaluations (Versatile Diffusion, InstructPix2Pix).

- CLIP-I: cos(E_img(a), E_img(b)), image-image similarity.
- CLIP-T: cos(E_img(x), E_txt(t)), image-text similarity (a plain cosine, not CLIPScore's 100 * max(cos, 0)).
- CLIP-D: cos(E_img(x1) - E_img(x0), E_txt(t1) - E_txt(t0)), the directional similarity of
  InstructPix2Pix (Brooks et al. 2023, Sec. 4) and StyleGAN-NADA.
The model loads from a local ``save_pretrained`` folder or a hub id; preprocessing is done here on tensors
(resize shortest side, centre crop, CLIP mean/std), so no CLIPProcessor or image-processor file is needed.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from ..core.hub import cached, offline_hint, unreachable_reason
from ..errors import PriorswapError
from .extractor import check_images

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _load(loader, ref: str, what: str):
    if not os.path.isdir(ref):
        reason = None if cached(ref, "config.json") else unreachable_reason()
        if reason:
            raise PriorswapError(
                f"{what} {ref!r} is not a local folder, not in the hub cache, and {reason}; {offline_hint(ref)}"
            )
    try:
        return loader.from_pretrained(ref)
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise PriorswapError(
            f"{what} {ref!r} could not be loaded ({reason}); expected a local save_pretrained folder, or a hub id "
            f"on a machine online (offline: `hf download {ref} --local-dir DIR` elsewhere and pass DIR)"
        ) from None


class CLIPSimilarity(nn.Module):
    """Normalised CLIP embeddings and the CLIP-I / CLIP-T / CLIP-D cosines, each returned per sample (B,).

    ``model``: a folder written by ``CLIPModel.save_pretrained`` or a hub id such as
    ``openai/clip-vit-large-patch14``. The tokenizer is read from the same place (or ``tokenizer``) if it has
    one; without a tokenizer, text must be passed as token ids.
    """

    def __init__(self, model: str, tokenizer: str | None = None):
        super().__init__()

        ref = os.path.expanduser(str(model))
        if not os.path.isdir(ref) and os.path.exists(ref):
            raise PriorswapError(f"CLIP model {ref!r} is a file; expected a save_pretrained folder or a hub id")
        self.model = _load(CLIPModel, ref, "CLIP model").eval().requires_grad_(False)
        tok_ref = tokenizer or ref
        has_local_tok = os.path.isdir(tok_ref) and any(
            os.path.isfile(os.path.join(tok_ref, f)) for f in ("vocab.json", "tokenizer.json", "tokenizer_config.json")
        )
        self.tokenizer = (
            _load(CLIPTokenizer, tok_ref, "CLIP tokenizer")
            if (tokenizer or has_local_tok or not os.path.isdir(ref))
            else None
        )
        self.image_size = int(self.model.config.vision_config.image_size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def train(self, mode: bool = True) -> "CLIPSimilarity":
        """Always eval: a parent's ``.train()`` must not turn on the frozen CLIP's dropout."""
        self.training = False
        self.model.eval()
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> CLIP pixel values: bicubic resize of the short side, centre crop, CLIP normalisation."""
        x = check_images(images).to(self.device)
        h, w = x.shape[-2:]
        s = self.image_size
        size = (s, max(s, round(w * s / h))) if h <= w else (max(s, round(h * s / w)), s)
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (x.shape[-2] - s) // 2, (x.shape[-1] - s) // 2
        x = x[..., top : top + s, left : left + s]  # (B, 3, s, s)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """(B, P) unit-norm image embeddings (vision pooler -> visual projection)."""
        pooled = self.model.vision_model(pixel_values=self.preprocess(images)).pooler_output  # (B, Hv)
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    @torch.no_grad()
    def text_embeds(self, text: list[str] | torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, P) unit-norm text embeddings from strings (needs a tokenizer) or (B, L) token ids."""
        if isinstance(text, str):
            text = [text]
        if not torch.is_tensor(text):
            if self.tokenizer is None:
                raise PriorswapError(
                    "CLIP text given as strings but the CLIP model folder has no tokenizer; pass tokenizer=FOLDER or token ids"
                )
            max_len = int(self.model.config.text_config.max_position_embeddings)
            tok = self.tokenizer(list(text), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            text, attention_mask = tok["input_ids"], tok["attention_mask"]
        ids = text.to(self.device)
        mask = attention_mask.to(self.device) if attention_mask is not None else None
        pooled = self.model.text_model(input_ids=ids, attention_mask=mask).pooler_output  # (B, Ht)
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)

    def clip_i(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        """(B,) CLIP-I: image-image cosine."""
        return (self.image_embeds(images_a) * self.image_embeds(images_b)).sum(-1)

    def clip_t(self, images: torch.Tensor, text: list[str] | torch.Tensor) -> torch.Tensor:
        """(B,) CLIP-T: image-text cosine."""
        return (self.image_embeds(images) * self.text_embeds(text)).sum(-1)

    def clip_directional(
        self,
        source_images: torch.Tensor,
        edited_images: torch.Tensor,
        source_text: list[str] | torch.Tensor,
        edited_text: list[str] | torch.Tensor,
    ) -> torch.Tensor:
        """(B,) CLIP-D: cosine between the image-embedding change and the caption-embedding change."""
        d_img = self.image_embeds(edited_images) - self.image_embeds(source_images)  # (B, P)
        d_txt = self.text_embeds(edited_text) - self.text_embeds(source_text)  # (B, P)
        return F.cosine_similarity(d_img, d_txt, dim=-1, eps=1e-8)
