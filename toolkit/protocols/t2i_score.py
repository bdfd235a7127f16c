"""Score a text-to-image evaluation's samples, read back from the PNGs on disk (a resumed run scores alike).

Per sample:
- CLIP score: 100 * max(cos(E_img(sample), E_txt(prompt)), 0) (Hessel et al. 2021 without the 2.5 weight, as
  torchmetrics' CLIPScore and most text-to-image papers report it);
- CLIP-I and DINO (DreamBooth, Ruiz et al. 2023): the mean cosine similarity of the sample's CLIP image embedding
  (resp. DINO features of its centre square) to those of every subject image.
Per row (method, scale): FID (Inception) and FD-DINOv2 of all its samples against the reference images' statistics.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import PriorswapError
from ..images import read_image, to_unit
from ..metrics import FeatureStats
from ..t2i.prompts import Prompt
from .generate import Method, SampleStore, Setting
from .score import TITLES, MetricNets, Scored, centre_square


def clip_score(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """(B,) CLIP score of unit-norm (B, P) image and text embeddings: 100 * max(cos, 0)."""
    return 100.0 * (image_embeds * text_embeds).sum(-1).clamp(min=0)


def subject_embeddings(nets: MetricNets, paths: Sequence[str], metrics: tuple[str, ...], device) -> dict:
    """CLIP image embeddings (S, P) and DINO features (S, D) of the subject images, each image at its own size."""
    out = {}
    images = [to_unit(read_image(p, quiet=True)).to(device) for p in paths]
    if "clip_i" in metrics:
        out["clip"] = torch.cat([nets.clip.image_embeds(x) for x in images])
    if "dino_sim" in metrics:
        out["dino"] = torch.cat([nets.dinov2(centre_square(x)).float() for x in images])
    return out


class T2IScorer:
    """Computes ``metrics`` of each (method, scale) from the stored samples. ``reference``: FeatureStats per set
    metric; ``subjects``: :func:`subject_embeddings`."""

    def __init__(
        self,
        metrics: tuple[str, ...],
        nets: MetricNets,
        store: SampleStore,
        reference: dict[str, FeatureStats] | None = None,
        subjects: dict[str, torch.Tensor] | None = None,
        batch_size: int = 32,
        device="cpu",
    ):
        self.metrics, self.nets, self.store = metrics, nets, store
        self.reference, self.subjects = reference or {}, subjects or {}
        self.batch_size, self.device = batch_size, torch.device(device)

    @torch.no_grad()
    def score(self, method: Method, setting: Setting, prompts: list[Prompt], num_samples: int) -> Scored:
        m = self.metrics
        per: dict[str, list[float]] = {k: [] for k in m if k in ("clip_score", "clip_i", "dino_sim")}
        stats: dict[str, FeatureStats | None] = {k: None for k in m if k in ("fid", "fd_dinov2")}
        result = Scored()
        entries = [(p, k) for p in prompts for k in range(num_samples)]
        for start in range(0, len(entries), self.batch_size):
            chunk = entries[start : start + self.batch_size]
            gen = torch.cat([self.store.load(method.name, setting.tag, p.id, k) for p, k in chunk]).to(self.device)
            values: dict[str, torch.Tensor] = {}
            if {"clip_score", "clip_i"} & set(m):
                g = self.nets.clip.image_embeds(gen)  # (B, P), unit norm
                if "clip_score" in m:
                    values["clip_score"] = clip_score(g, self.nets.clip.text_embeds([p.text for p, _ in chunk]))
                if "clip_i" in m:
                    values["clip_i"] = (g @ self.subjects["clip"].T).mean(-1)
            if {"dino_sim", "fd_dinov2"} & set(m):
                d = self.nets.dinov2(centre_square(gen)).float()  # (B, D)
                if "dino_sim" in m:
                    s = self.subjects["dino"]
                    values["dino_sim"] = F.cosine_similarity(d[:, None], s[None], dim=-1, eps=1e-8).mean(-1)
                if "fd_dinov2" in m:
                    stats["fd_dinov2"] = (stats["fd_dinov2"] or FeatureStats(d.shape[-1])).add(d)
            if "fid" in m:
                f = self.nets.inception(gen)
                stats["fid"] = (stats["fid"] or FeatureStats(f.shape[-1])).add(f)
            for k in per:
                per[k] += values[k].float().cpu().tolist()
            for j, (p, k) in enumerate(chunk):
                row = {"method": method.name, "setting": setting.label, "item": p.id, "sample": k}
                result.rows.append(row | {name: float(values[name][j]) for name in per})
        result.count = len(entries)
        for k, v in per.items():
            result.values[k] = sum(v) / len(v)
        for k, s in stats.items():
            if s is None or s.n < 2:
                raise PriorswapError(f"{TITLES[k]} needs at least 2 samples per row; got {0 if s is None else s.n}")
            result.values[k] = s.frechet_to(self.reference[k])
        return result
