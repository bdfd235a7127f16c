"""What the demo measures for one fine-tune: guided samples (Eq. 6 vs Eq. 7), unconditional samples, and how far the
fine-tune's unconditional prediction drifted from the base's.

Sample metrics are taken in the 128-d features of the shipped Fashion-MNIST classifier, against the official test
split (never seen in training): FD (biased upward at small sample counts; compare equal counts only) and KID
(unbiased, ``metrics.kid``), both against the 4 target classes and, for unconditional samples, all 10.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.sampling import Guidance
from ..evaluation import EvalSettings, eval_labels, sample_images
from ..metrics import FeatureStats, KIDReference
from .config import DemoConfig


@dataclass
class Reference:
    """One held-out image set in feature space, for FD and KID."""

    stats: FeatureStats
    kid: KIDReference

    @classmethod
    def of(cls, extractor, images: Tensor) -> "Reference":
        feats = features(extractor, images)
        return cls(FeatureStats(feats.shape[1]).add(feats), KIDReference(feats))

    def score(self, feats: Tensor) -> tuple[float, float]:
        """(FD, KID) of ``feats`` against this set."""
        return FeatureStats(feats.shape[1]).add(feats).frechet_to(self.stats), self.kid.kid(feats)


@torch.no_grad()
def features(extractor, images: Tensor, chunk: int = 500) -> Tensor:
    return torch.cat([extractor(images[i : i + chunk]).cpu() for i in range(0, len(images), chunk)])


def _settings(cfg: DemoConfig, seed: int) -> EvalSettings:
    return EvalSettings(cfg.scales, cfg.num_samples, cfg.steps, "ddim", cfg.batch_size, seed * 100_003)


def guided(
    cfg: DemoConfig, ft, base, seed: int, scheduler_config: dict, extractor, classifier, ref4: Reference
) -> dict:
    """Per scale: vanilla CFG (Eq. 6, the fine-tune's own null) and swapped CFG (Eq. 7, the base's null) from the same
    per-sample noise, balanced labels; FD and KID against the 4 target classes, and label accuracy. At scale 1 both
    use only the conditional prediction, so they are one run."""
    settings = _settings(cfg, seed)
    labels = eval_labels(cfg.num_samples, 4)
    idx = list(range(cfg.num_samples))
    out: dict[str, float] = {}
    for scale in cfg.scales:
        modes = ("vanilla",) if scale == 1.0 else ("vanilla", "swapped")
        for mode in modes:
            prior = base if mode == "swapped" else None
            imgs = sample_images(
                ft,
                prior,
                labels,
                idx,
                Guidance(scale),
                settings,
                scheduler_config,
                None,
                cfg.progress,
                f"{mode} g={scale:g}",
            )
            fd, kid = ref4.score(features(extractor, imgs))
            with torch.no_grad():
                acc = float((classifier(imgs).argmax(1) == labels).float().mean())
            for name in (mode,) if len(modes) == 2 else ("vanilla", "swapped"):
                out.update({f"fd_{name}_g{scale:g}": fd, f"kid_{name}_g{scale:g}": kid, f"acc_{name}_g{scale:g}": acc})
    return out


def unconditional(
    cfg: DemoConfig, den, seed: int, scheduler_config: dict, extractor, net, ref4: Reference, ref10: Reference, classes
) -> dict:
    """Unconditional samples of one model (its own null): FD/KID against the 4 target classes and all 10, and the
    share the 10-way classifier puts into the 4 target classes."""
    imgs = sample_images(
        den, None, None, list(range(cfg.num_samples)), Guidance(1.0), _settings(cfg, seed), scheduler_config, None,
        cfg.progress, "unconditional",
    )  # fmt: skip
    feats = features(extractor, imgs)
    fd4, kid4 = ref4.score(feats)
    fd10, kid10 = ref10.score(feats)
    with torch.no_grad():
        share = float(torch.isin(net(imgs).argmax(1), torch.tensor(classes)).float().mean())
    return {"fd_vs_4": fd4, "kid_vs_4": kid4, "fd_vs_10": fd10, "kid_vs_10": kid10, "share_in_4": share}


@torch.no_grad()
def prior_drift(ft, base, x4: Tensor, y4: Tensor, x10: Tensor, timesteps, seed: int = 0) -> dict:
    """The mechanism, on held-out test images noised by the shared training schedule, x_t = √ᾱ x_0 + √(1−ᾱ) ε (Eq. 2):

    - ``drift``: mean (ε_ft(x_t, ∅) − ε_base(x_t, ∅))², how far the fine-tune's unconditional prediction moved;
    - ``null_err_*``: mean (ε(x_t, ∅) − ε)², each model's unconditional denoising error on the 4 target classes
      (``_4``) and on all 10 (``_10``), its training loss with the label dropped;
    - ``cond_err_ft``: the fine-tune's conditional error on the target classes, for scale.
    Per timestep t (of the 1000-step schedule), averaged over images and pixels."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, float]] = {}
    for t in timesteps:
        a = float(base.alphas_cumprod[t])
        row = {}
        for tag, x in (("4", x4), ("10", x10)):
            x0 = x * 2 - 1  # (N, 1, 32, 32) pixels in [-1, 1], as the data modules give them
            eps = torch.randn(x0.shape, generator=gen)
            x_t = a**0.5 * x0 + (1 - a) ** 0.5 * eps
            tt = torch.full((len(x0),), t, dtype=torch.long)
            e_ft, e_base = ft(x_t, tt, None), base(x_t, tt, None)
            row[f"null_err_ft_{tag}"] = float(((e_ft - eps) ** 2).mean())
            row[f"null_err_base_{tag}"] = float(((e_base - eps) ** 2).mean())
            if tag == "4":
                row["drift"] = float(((e_ft - e_base) ** 2).mean())
                row["cond_err_ft"] = float(((ft(x_t, tt, y4) - eps) ** 2).mean())
        out[str(t)] = row
    return out
