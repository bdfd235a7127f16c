"""The demo's report: per regime, vanilla vs swapped CFG by scale, the mechanism figures, a grid; one FD/KID-vs-scale
plot; a conclusion computed from the numbers (``verdict``), whatever they show.
"""

from __future__ import annotations

import os
import statistics

from ..files import atomic_write
from ..images import save_grid
from .config import DemoConfig
from .verdict import Paired, arm_sentence, mean_sd, nodrop_claim, paired, regime_claim, swap_sentence

MODES = ("vanilla", "swapped")
PAPER_SCALE = 1.5
KID = 1000.0  # KID is shown x 10^3


def _units(records: list[dict]) -> list[dict]:
    """Every (fine-tune seed, sampling seed) run of one regime."""
    return [u for r in records for u in r["per_seed"]]


def _col(units: list[dict], key: str, part: str = "values") -> list[float]:
    return [u[part][key] for u in units]


def write_report(cfg: DemoConfig, results: dict) -> str:
    by_regime = {r.name: [x for x in results["runs"] if x["regime"] == r.name] for r in cfg.regimes}
    _plot(os.path.join(cfg.out, "fd_vs_scale.png"), cfg, by_regime)
    n_ft, n_s = len(cfg.finetune_seeds), len(cfg.sample_seeds)
    lines = [
        "# priorswap demo: when does swapping in the base's unconditional prior help?",
        "",
        f"Preset `{cfg.preset}`. Base: a 10-class pixel-space DiT (`toolkit/assets/demo_base`), fine-tuned "
        "on Sandal, Sneaker, Bag and Ankle boot (relabelled 0-3) in the regimes below, each fixed in advance (from the "
        "paper's account of its Table 3; the LoRA ones to test whether a LoRA needs CFG dropout; reasoning in "
        "`recipes/demo_*.yaml`).",
        "",
        '| regime | images | steps (batch 32) | epochs | CFG dropout | trains | "swapped" is | fine-tune seeds |',
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in cfg.regimes:
        imgs, steps = cfg.images_of(r) * 4, cfg.steps_of(r)
        how = ("a LoRA (rank 16)", "its free prior (adapter off)") if r.lora else ("all weights", "the loaded base")
        lines.append(
            f"| {r.title} | {imgs:,} | {steps:,} | {steps * 32 / imgs:.2g} | {r.dropout:g} | {how[0]} | {how[1]} | {n_ft} |"
        )
    lines += [
        "",
        f"Sampling: DDIM {cfg.steps} steps, {cfg.num_samples} samples per cell, labels balanced over the 4 classes, the same "
        f"per-sample noise for both methods. Spread: mean ± sd over {n_ft * n_s} runs per regime ({n_ft} fine-tune seed(s) x "
        f"{n_s} sampling seeds)" + ("; with one fine-tune seed it is sampling noise only." if n_ft == 1 else "."),
        "",
        f"Metrics, in the 128-d features of a small CNN trained on the 10 classes (test accuracy {results['classifier_test_accuracy']:.1%}), "
        "against the official test split: **FD-FMNIST** (Fréchet distance; *not* Inception FID; biased upward at small sample "
        "counts, so compare equal counts only) and **KID** (unbiased, shown x 10³). Lower is better. Label accuracy: how "
        "often the classifier's 10-way prediction is the requested class.",
        "A difference is *resolved* when its mean exceeds twice its standard error over the runs; otherwise no verdict is written.",
        "",
        "## Conclusion",
        "",
    ]
    lines += _conclusion(cfg, by_regime)
    for r in cfg.regimes:
        lines += _regime_section(cfg, r, by_regime[r.name], results["base_uncond"])
    lines += ["", "## Run time", "", "| stage | minutes |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in results["stages"].items()]
    lines += [f"| total | {results['seconds'] / 60:.1f} |", "", "Stages reused from an earlier run count as near zero."]
    path = os.path.join(cfg.out, "report.md")
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")
    return path


def _diff(units: list[dict], metric: str, scale: float):
    return paired(_col(units, f"{metric}_vanilla_g{scale:g}"), _col(units, f"{metric}_swapped_g{scale:g}"))


def _conclusion(cfg: DemoConfig, by_regime: dict) -> list[str]:
    out = []
    guided = [s for s in cfg.scales if s != 1.0]
    scale = PAPER_SCALE if PAPER_SCALE in guided else guided[0]
    for r in cfg.regimes:
        u = _units(by_regime[r.name])
        out.append(swap_sentence(r.title, "KID x 10³", _scaled(_diff(u, "kid", scale)), scale))
        out.append(swap_sentence(r.title, "FD-FMNIST", _diff(u, "fd", scale), scale))
    names = [r.name for r in cfg.regimes]
    if "large_limited" in names and "small" in names:
        large, small = (_units(by_regime[n]) for n in ("large_limited", "small"))
        for metric in ("kid", "fd"):
            claim = regime_claim(_diff(large, metric, scale), _diff(small, metric, scale))
            label = "KID" if metric == "kid" else "FD-FMNIST"
            out.append(f"- **The paper's regime claim, by {label} at g = {scale:g}:** {claim}.")
    if "lora" in names and "lora_nodrop" in names:
        out += _nodrop(cfg, _units(by_regime["lora"]), _units(by_regime["lora_nodrop"]), scale)
    drift = {r.name: [rec["drift"] for rec in by_regime[r.name]] for r in cfg.regimes}
    t_mid = str(cfg.drift_timesteps[len(cfg.drift_timesteps) // 2])
    parts = [
        f"{r.title}: {mean_sd([d[t_mid]['drift'] for d in drift[r.name]], 4)}"
        for r in cfg.regimes
    ]  # fmt: skip
    lower = [
        r for r in cfg.regimes if all(d[t_mid]["null_err_ft_4"] < d[t_mid]["null_err_base_4"] for d in drift[r.name])
    ]
    errs = "; ".join(
        f"{r.title}: {mean_sd([d[t_mid]['null_err_ft_4'] for d in drift[r.name]], 4)} vs "
        f"{mean_sd([d[t_mid]['null_err_base_4'] for d in drift[r.name]], 4)}"
        for r in cfg.regimes
    )
    verdict = (
        "in every regime the fine-tune's unconditional prediction is *better* than the base's on the target classes, "
        "so the premise of the swap (a degraded prior) is not met here"
        if len(lower) == len(cfg.regimes)
        else f"the fine-tune's unconditional prediction is worse than the base's on the target classes in "
        f"{len(cfg.regimes) - len(lower)} of {len(cfg.regimes)} regimes"
    )
    out.append(
        f"- Degraded prior? Unconditional denoising error on held-out target images at t = {t_mid}, fine-tune vs base "
        f"({errs}): {verdict}."
    )
    out.append(
        f"- Prior drift at t = {t_mid} (mean (ε_ft(x_t, ∅) − ε_base(x_t, ∅))² on held-out target images): "
        + "; ".join(parts)
        + "."
    )
    return out


def _nodrop(cfg: DemoConfig, drop: list[dict], nodrop: list[dict], scale: float) -> list[str]:
    """Arms A (dropout 0.1, vanilla), B (dropout 0.1, free prior), C (dropout 0, free prior): C − B and C − A, paired
    by (fine-tune seed, sampling seed), which fixes each sample's noise; the same rules as the swap's verdicts."""
    out = []
    for metric, label, k in (("kid", "KID x 10³", KID), ("fd", "FD-FMNIST", 1.0)):
        c = _col(nodrop, f"{metric}_swapped_g{scale:g}")
        d = {
            arm: paired(_col(drop, f"{metric}_{mode}_g{scale:g}"), c)
            for arm, mode in (("B", "swapped"), ("A", "vanilla"))
        }
        out.append(
            arm_sentence("C (dropout 0, free prior) − B (dropout 0.1, free prior)", label, _scaled(d["B"], k), scale)
        )
        out.append(
            arm_sentence("C (dropout 0, free prior) − A (dropout 0.1, vanilla CFG)", label, _scaled(d["A"], k), scale)
        )
        out.append(
            f"- **The no-dropout claim, by {label.split()[0]} at g = {scale:g}:** {nodrop_claim(d['B'], d['A'])}."
        )
    if 1.0 in cfg.scales:  # the conditional prediction alone: where all steps on the condition should show first
        cond = paired(_col(drop, "kid_vanilla_g1"), _col(nodrop, "kid_vanilla_g1"))
        out.append(
            arm_sentence("Conditional prediction alone, dropout 0 − dropout 0.1", "KID x 10³", _scaled(cond), 1.0)
        )
    return out


def _scaled(d: Paired, k: float = KID) -> Paired:
    return Paired(d.mean * k, d.sd * k, d.n)


def _regime_section(cfg: DemoConfig, regime, records: list[dict], base_uncond: list[dict]) -> list[str]:
    units = _units(records)
    lines = [
        "",
        f"## {regime.title}",
        "",
        "| scale | FD vanilla | FD swapped | swapped − vanilla | KID vanilla | KID swapped | swapped − vanilla | acc vanilla | acc swapped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in cfg.scales:
        fd, kid = _diff(units, "fd", s), _scaled(_diff(units, "kid", s))
        cells = [
            mean_sd(_col(units, f"fd_vanilla_g{s:g}")), mean_sd(_col(units, f"fd_swapped_g{s:g}")), fd.text(),
            mean_sd(_col(units, f"kid_vanilla_g{s:g}"), scale=KID), mean_sd(_col(units, f"kid_swapped_g{s:g}"), scale=KID),
            kid.text(),
            mean_sd(_col(units, f"acc_vanilla_g{s:g}"), 1, 100) + "%", mean_sd(_col(units, f"acc_swapped_g{s:g}"), 1, 100) + "%",
        ]  # fmt: skip
        lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "At scale 1 both methods use only the conditional prediction: one run, shown twice.",
        "",
        "Unconditional samples (the mechanism: is the fine-tune's prior worse than the base's?):",
        "",
        "| model | FD vs its 4 target classes | KID vs 4 | FD vs all 10 | KID vs 10 | classified into the 4 |",
        "|---|---|---|---|---|---|",
    ]
    for label, rows in (
        ("base (trained on all 10)", base_uncond),
        ("fine-tune (trained on the 4)", [u["uncond"] for u in units]),
    ):
        lines.append(
            f"| {label} | {mean_sd([x['fd_vs_4'] for x in rows])} | {mean_sd([x['kid_vs_4'] for x in rows], scale=KID)} | "
            f"{mean_sd([x['fd_vs_10'] for x in rows])} | {mean_sd([x['kid_vs_10'] for x in rows], scale=KID)} | "
            f"{mean_sd([x['share_in_4'] for x in rows], 1, 100)}% |"
        )
    lines += [
        "",
        "Denoising errors on held-out noised test images (mean squared ε error per pixel; mean ± sd over fine-tune seeds):",
        "",
        "| t | drift ft∅ vs base∅ | ft∅ error, 4 classes | base∅ error, 4 classes | ft∅ error, 10 classes | base∅ error, 10 classes | ft conditional error, 4 classes |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = ("drift", "null_err_ft_4", "null_err_base_4", "null_err_ft_10", "null_err_base_10", "cond_err_ft")
    for t in cfg.drift_timesteps:
        cells = [mean_sd([rec["drift"][str(t)][k] for rec in records], 4) for k in keys]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    grid = next((rec["grid"] for rec in records if "grid" in rec), None)
    if grid is not None:
        name = f"grid_{regime.name}.png"
        save_grid(os.path.join(cfg.out, name), list(grid.values()), row_labels=list(grid))
        lines += [
            "",
            f"![{regime.title}]({name})",
            "",
            f"`{name}` (fine-tune seed {cfg.finetune_seeds[0]}): columns are classes 0-3 twice; rows vanilla and swapped per scale.",
        ]
    return lines


def _plot(path: str, cfg: DemoConfig, by_regime: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cfg.regimes)
    fig, axes = plt.subplots(2, n, figsize=(4 * n, 6), dpi=110, squeeze=False)
    for j, r in enumerate(cfg.regimes):
        units = _units(by_regime[r.name])
        for i, (metric, label, k) in enumerate((("fd", "FD-FMNIST", 1.0), ("kid", "KID x 10³", KID))):
            ax = axes[i][j]
            for m in MODES:
                vals = [[k * v for v in _col(units, f"{metric}_{m}_g{s:g}")] for s in cfg.scales]
                ax.errorbar(
                    cfg.scales, [statistics.mean(v) for v in vals],
                    yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals], marker="o", capsize=3, label=f"{m} CFG",
                )  # fmt: skip
            ax.set_xlabel("guidance scale")
            ax.set_ylabel(f"{label} (lower is better)")
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(r.title, fontsize=9)
        axes[0][j].legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
