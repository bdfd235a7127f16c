"""Score a protocol run's samples with the paper's metrics (Tables 1, 2 and 5) and write the table.

Per-sample metrics compare each generated image with its item: LPIPS/PSNR/SSIM against the ground-truth view
(Zero-1-to-3), CLIP-I and DINOv2 similarity against the input image (VD, InstructPix2Pix), CLIP-T, ImageReward and
PickScore against the output caption and CLIP-D (directional) against the caption change (InstructPix2Pix). Set metrics (FID,
FD-DINOv2) compare the features of all samples of a (method, setting) with a reference image set.
Everything is read back from the PNGs on disk, so scoring is the same for a fresh and a resumed run.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ..errors import PriorswapError
from ..files import write_text_atomic
from ..images import read_image, to_unit
from ..metrics import LPIPS, CLIPSimilarity, FeatureStats, build_extractor, psnr, ssim
from ..metrics.imagereward import build_imagereward
from ..metrics.pickscore import PickScore, preference
from .generate import Method, SampleStore, Setting
from .items import Item
from .settings import ALLOWED, DEFAULT_METRICS, check_metrics  # noqa: F401 (re-exported)

PAIR_METRICS = (
    "lpips", "psnr", "ssim", "clip_i", "clip_t", "clip_d", "dino_sim", "imagereward", "pickscore", "clip_score",
)  # fmt: skip
SET_METRICS = ("fid", "fd_dinov2")
LOWER_IS_BETTER = {"lpips", "fid", "fd_dinov2"}
TITLES = {
    "lpips": "LPIPS",
    "psnr": "PSNR",
    "ssim": "SSIM",
    "clip_i": "CLIP-I",
    "clip_t": "CLIP-T",
    "clip_d": "CLIP-D",
    "dino_sim": "DINOv2",
    "fid": "FID",
    "fd_dinov2": "FD_DINOv2",
    "imagereward": "ImageReward",
    "pickscore": "PS vs vanilla",
    "clip_score": "CLIP score",  # text-to-image: 100 * max(cos(image, prompt), 0)
}


@dataclass
class MetricNets:
    """The pretrained networks the chosen metrics need (None where unused). Built before any sampling."""

    clip: Any = None  # priorswap.toolkit.metrics.CLIPSimilarity
    lpips: Any = None  # priorswap.toolkit.metrics.LPIPS
    inception: Any = None  # priorswap.toolkit.metrics.InceptionExtractor
    dinov2: Any = None  # priorswap.toolkit.metrics.DINOv2Extractor
    pickscore: Any = None  # priorswap.toolkit.metrics.pickscore.PickScore
    imagereward: Any = None  # priorswap.toolkit.metrics.imagereward.ImageReward

    def to(self, device) -> "MetricNets":
        for name in ("clip", "lpips", "inception", "dinov2", "pickscore", "imagereward"):
            net = getattr(self, name)
            if net is not None:
                setattr(self, name, net.to(device))
        return self


def build_metric_nets(
    metrics: tuple[str, ...],
    clip: str | None = None,
    lpips_net: str = "alex",
    lpips_weights: str | None = None,
    inception_weights: str | None = None,
    dinov2_weights: str | None = None,
    dinov2_model: str | None = None,
    dinov2_size: int | None = None,
    pickscore: str | None = None,
    pickscore_processor: str | None = None,
    imagereward_weights: str | None = None,
    imagereward_config: str | None = None,
    imagereward_tokenizer: str | None = None,
) -> MetricNets:
    """Load (on the CPU) every network ``metrics`` need; a missing or wrong weight file is a one-line error now."""
    nets = MetricNets()
    if {"clip_i", "clip_t", "clip_d"} & set(metrics):
        if not clip:
            raise PriorswapError(
                "CLIP metrics need --clip (a CLIPModel folder or hub id such as openai/clip-vit-large-patch14)"
            )
        nets.clip = CLIPSimilarity(clip)
        if {"clip_t", "clip_d"} & set(metrics) and nets.clip.tokenizer is None:
            raise PriorswapError(
                f"--clip {clip!r} has no tokenizer files; CLIP-T and CLIP-D need one (save the CLIPTokenizer into that folder)"
            )
    if "lpips" in metrics:
        nets.lpips = LPIPS(lpips_net, lpips_weights)
    if "fid" in metrics:
        nets.inception = build_extractor(
            "inception", inception_weights, allow_download=True, weights_flag="as --inception-weights FILE"
        )
    if "pickscore" in metrics:
        if not pickscore:
            raise PriorswapError("the pickscore metric needs --pickscore (yuvalkirstain/PickScore_v1 or its folder)")
        nets.pickscore = PickScore(pickscore, pickscore_processor)
    if "imagereward" in metrics:
        nets.imagereward = build_imagereward(imagereward_weights, imagereward_config, imagereward_tokenizer)
    if {"fd_dinov2", "dino_sim"} & set(metrics):
        nets.dinov2 = build_extractor(
            "dinov2",
            dinov2_weights,
            model_name=dinov2_model,
            image_size=dinov2_size,
            weights_flag="as --dinov2-weights FILE",
        )
    return nets


def reference_images(paths: list[str], size: int, batch_size: int):
    """Real images as (B, 3, size, size) in [0, 1]: centre square crop, bicubic resize. Unreadable files are
    skipped and counted on stderr (as the training datamodules do)."""
    batch, skipped = [], 0
    for p in paths:
        try:
            with Image.open(p) as img:
                img = img.convert("RGB")
                w, h = img.size
                s = min(w, h)
                img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize(
                    (size, size), Image.BICUBIC
                )
                batch.append(to_unit(img))
        except OSError:
            skipped += 1
            continue
        if len(batch) == batch_size:
            yield torch.cat(batch)
            batch = []
    if batch:
        yield torch.cat(batch)
    if skipped:
        print(f"priorswap: note: skipped {skipped} unreadable reference images", file=sys.stderr)


def centre_square(x: torch.Tensor) -> torch.Tensor:
    """The central square of (B, C, H, W) images: DINOv2 similarity compares crops alike (the extractor would squash)."""
    h, w = x.shape[-2:]
    s = min(h, w)
    return x[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]


@dataclass
class Scored:
    """Results of one (method, setting): the mean of each per-sample metric, set metrics, and the rows."""

    values: dict[str, float] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    count: int = 0


class Scorer:
    """Computes ``metrics`` for the samples of one run; ``reference`` is a dict of FeatureStats for set metrics."""

    def __init__(
        self,
        kind: str,
        metrics: tuple[str, ...],
        nets: MetricNets,
        conditions,
        store: SampleStore,
        reference: dict[str, FeatureStats] | None = None,
        batch_size: int = 32,
        device="cpu",
    ):
        self.kind, self.metrics, self.nets, self.conditions, self.store = kind, metrics, nets, conditions, store
        self.reference = reference or {}
        self.batch_size, self.device = batch_size, torch.device(device)
        self._inputs: dict[str, dict[str, torch.Tensor]] = {}  # item id -> cached input embeddings

    # -- what each sample is compared with ----------------------------------------------------------
    def _target(self, it: Item) -> torch.Tensor:
        """Zero-1-to-3's ground-truth view, prepared like the reference view (white background, size x size)."""
        size = self.conditions.pixel_size(it)
        return to_unit(read_image(it.target, size, quiet=True))

    def _input(self, it: Item) -> torch.Tensor:
        """What CLIP-I / DINOv2 similarity compare a sample with: the true view (Zero-1-to-3), the input as the
        model saw it (IP2P) or as stored (VD, any size)."""
        return self._target(it) if self.kind == "zero123" else to_unit(self.conditions.model_input(it))

    def _input_embeds(self, it: Item) -> dict[str, torch.Tensor]:
        """CLIP / DINOv2 embeddings of an item's reference image, computed once per item (inputs differ in size)."""
        if it.id not in self._inputs:
            x, out = self._input(it), {}
            if self.nets.clip is not None:
                out["clip"] = self.nets.clip.image_embeds(x)[0]  # (P,)
            if self.nets.dinov2 is not None and "dino_sim" in self.metrics:
                out["dino"] = self.nets.dinov2(centre_square(x).to(self.device))[0].float()  # (D,)
            self._inputs[it.id] = out
        return self._inputs[it.id]

    @torch.no_grad()
    def score(self, method: Method, setting: Setting, items: list[Item], num_samples: int) -> Scored:
        per: dict[str, list[float]] = {m: [] for m in self.metrics if m in PAIR_METRICS}
        stats = {m: None for m in self.metrics if m in SET_METRICS}
        result = Scored()
        entries = [(it, k) for it in items for k in range(num_samples)]
        entries.sort(key=lambda e: self.conditions.pixel_size(e[0]))  # equal sizes adjacent, so batches stack
        start = 0
        while start < len(entries):
            size = self.conditions.pixel_size(entries[start][0])
            stop = start
            while (
                stop < len(entries)
                and stop - start < self.batch_size
                and self.conditions.pixel_size(entries[stop][0]) == size
            ):
                stop += 1
            chunk = entries[start:stop]
            start = stop
            gen = torch.cat([self.store.load(method.name, setting.tag, it.id, k) for it, k in chunk]).to(
                self.device
            )  # (B, 3, H, W)
            values = self._pair_values(chunk, gen)
            feats = self._set_features(gen, stats)
            if "dino_sim" in per:
                inp = torch.stack([self._input_embeds(it)["dino"] for it, _ in chunk])  # (B, D)
                values["dino_sim"] = torch.nn.functional.cosine_similarity(feats["dino"], inp, dim=-1, eps=1e-8)
            for m in per:
                per[m] += values[m].float().cpu().tolist()
            for j, (it, k) in enumerate(chunk):
                result.rows.append(
                    {
                        "method": method.name,
                        "setting": setting.label,
                        "item": it.id,
                        "sample": k,
                        **{m: float(values[m][j]) for m in per},
                    }
                )
        result.count = len(entries)
        for m, v in per.items():
            result.values[m] = sum(v) / len(v) if v else math.nan
        for m, s in stats.items():
            if s is None or s.n < 2:
                raise PriorswapError(f"{TITLES[m]} needs at least 2 samples per row; got {0 if s is None else s.n}")
            result.values[m] = s.frechet_to(self.reference[m])
        return result

    def _pair_values(self, chunk: list[tuple[Item, int]], gen: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        m = self.metrics
        if {"lpips", "psnr", "ssim"} & set(m):
            target = torch.cat([self._target(it) for it, _ in chunk]).to(self.device)  # (B, 3, H, W)
            if "lpips" in m:
                out["lpips"] = self.nets.lpips(gen, target)
            if "psnr" in m:
                out["psnr"] = psnr(gen, target)
            if "ssim" in m:
                out["ssim"] = ssim(gen, target)
        if {"clip_i", "clip_t", "clip_d"} & set(m):
            clip = self.nets.clip
            g = clip.image_embeds(gen)  # (B, P), unit norm
            i = torch.stack([self._input_embeds(it)["clip"] for it, _ in chunk])  # (B, P)
            if "clip_i" in m:
                out["clip_i"] = (g * i).sum(-1)
            if "clip_t" in m or "clip_d" in m:
                t_out = clip.text_embeds([it.output_caption for it, _ in chunk])  # (B, P)
                if "clip_t" in m:
                    out["clip_t"] = (g * t_out).sum(-1)
                if "clip_d" in m:  # InstructPix2Pix Sec. 4: cos(E_I(edit) - E_I(input), E_T(out) - E_T(in))
                    t_in = clip.text_embeds([it.input_caption for it, _ in chunk])
                    out["clip_d"] = torch.nn.functional.cosine_similarity(g - i, t_out - t_in, dim=-1, eps=1e-8)
        if "pickscore" in m:  # raw score against the output caption; made a preference by compare_to_vanilla
            out["pickscore"] = self.nets.pickscore(gen, [it.output_caption for it, _ in chunk])
        if "imagereward" in m:  # the edited image against the output caption; its mean is the table value
            out["imagereward"] = self.nets.imagereward(gen, [it.output_caption for it, _ in chunk])
        return out

    def _set_features(self, gen: torch.Tensor, stats: dict) -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = {}
        if self.nets.inception is not None and "fid" in stats:
            f = self.nets.inception(gen)
            stats["fid"] = (stats["fid"] or FeatureStats(f.shape[-1])).add(f)
        if self.nets.dinov2 is not None:
            feats["dino"] = self.nets.dinov2(centre_square(gen)).float()  # (B, D); samples are square but for IP2P
            if "fd_dinov2" in stats:
                stats["fd_dinov2"] = (stats["fd_dinov2"] or FeatureStats(feats["dino"].shape[-1])).add(feats["dino"])
        return feats


# -- the table -------------------------------------------------------------------------------------
def table(
    results: dict[tuple[str, str], Scored],
    methods: list[Method],
    settings: list[Setting],
    metrics: tuple[str, ...],
    title: str,
) -> str:
    """The paper-style markdown table: one row per (method, setting), best value per setting in bold."""
    arrows = {m: "↓" if m in LOWER_IS_BETTER else "↑" for m in metrics}
    lines = [
        title,
        "",
        "| method | guidance | n | " + " | ".join(f"{TITLES[m]} {arrows[m]}" for m in metrics) + " |",
        "|---|---|---|" + "---|" * len(metrics),
    ]
    for s in settings:
        best = {}
        for m in metrics:
            vals = [results[(meth.name, s.tag)].values[m] for meth in methods]
            best[m] = (min if m in LOWER_IS_BETTER else max)(vals) if len(methods) > 1 else None
        for meth in methods:
            r = results[(meth.name, s.tag)]
            cells = []
            for m in metrics:
                v = r.values[m]
                text = f"{v:.4f}" if abs(v) < 100 else f"{v:.2f}"
                cells.append(f"**{text}**" if best[m] is not None and v == best[m] else text)
            name = "vanilla CFG" if meth.prior is None else f"ours w/ {meth.name}"
            lines.append(f"| {name} | {s.label} | {r.count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(
    out_dir: str,
    text: str,
    results: dict[tuple[str, str], Scored],
    methods: list[Method],
    settings: list[Setting],
    metrics: tuple[str, ...],
) -> None:
    """eval.md (the table), eval.csv (method, prior, setting, metric, value, n) and items.csv (per sample), atomically."""

    def atomic(name: str, write) -> None:
        write_text_atomic(os.path.join(out_dir, name), write)

    atomic("eval.md", lambda f: f.write(text + "\n"))

    def summary(f):
        w = csv.writer(f)
        w.writerow(["method", "prior", "setting", "metric", "value", "n"])
        for meth in methods:
            for s in settings:
                r = results[(meth.name, s.tag)]
                for m in metrics:
                    w.writerow([meth.name, meth.prior or "", s.label, m, r.values[m], r.count])

    atomic("eval.csv", summary)
    pair = [m for m in metrics if m in PAIR_METRICS]
    pair += ["pickscore_raw"] if "pickscore" in pair else []  # the raw score beside the preference

    def per_item(f):
        w = csv.DictWriter(f, fieldnames=["method", "setting", "item", "sample", *pair])
        w.writeheader()
        for meth in methods:
            for s in settings:
                w.writerows(results[(meth.name, s.tag)].rows)

    atomic("items.csv", per_item)


def compare_to_vanilla(results: dict, methods, settings, metric: str = "pickscore") -> None:
    """Turn raw PickScores into the paper's "compared against IP2P" value, in place: per sample
    sigmoid(s_method - s_vanilla) on the same item, sample and setting (0.5 for vanilla itself), then the mean."""
    for s in settings:
        base = results[("vanilla", s.tag)]
        if metric not in base.values:
            return
        ref = {(r["item"], r["sample"]): r[metric] for r in base.rows}
        for m in methods:
            scored = results[(m.name, s.tag)]
            prefs = []
            for r in scored.rows:
                raw = r[metric]
                r[f"{metric}_raw"] = raw
                r[metric] = float(preference(torch.tensor(raw), torch.tensor(ref[(r["item"], r["sample"])])))
                prefs.append(r[metric])
            scored.values[metric] = sum(prefs) / len(prefs) if prefs else math.nan
