"""The one sampling entry point (``sampling.sample``) and the evaluation summary built on it.

A toy denoiser whose eps is ``x * c`` (c a per-sample number, 0.1 for the null) makes every guidance mode
cheap and distinguishable; ``sample`` must equal the hand-written "scheduler -> guided eps per batch ->
generate" glue it replaced, for single and dual CFG.
"""

import pytest
import torch

from priorswap.toolkit.core.denoisers import LatentSpace, ModelDenoiser
from priorswap.toolkit.core.loading import alphas_cumprod
from priorswap.toolkit.core.sampling import (
    DualGuidance,
    Guidance,
    cfg_eps,
    dual_cfg_eps,
    generate,
    make_scheduler,
    sample,
)
from priorswap.toolkit.dit.models import dit_scheduler_config
from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.evaluation import EvalSettings, evaluate_local, summarise
from priorswap.toolkit.metrics import FeatureStats, ModuleExtractor

SCHED = dit_scheduler_config()
SHAPE = (2, 4, 4)


class Toy(ModelDenoiser):
    """eps = x * c for a (B,) float condition c; the null condition is c = ``null``."""

    sample_size = 4

    def __init__(self, null: float = 0.1, name: str = "toy"):
        super().__init__(LatentSpace(alphas_cumprod(SCHED), "epsilon", 2), name)
        self.null = null

    def forward_batch(self, x, t, conds):
        b = x.shape[0] // len(conds)
        parts = []
        for i, c in enumerate(conds):
            c = torch.full((b,), self.null) if c is None else torch.as_tensor(c, dtype=x.dtype).reshape(-1).expand(b)
            parts.append(x[i * b : (i + 1) * b] * c.view(-1, 1, 1, 1).to(x))
        return torch.cat(parts)


def old_glue(model, make_eps, seeds, batch_size):
    """What api.py, evaluation.py, loading_unet.py and protocols/generate.py each wrote out before."""
    sched = make_scheduler("ddim", SCHED)
    return generate(make_eps, sched, seeds, SHAPE, 3, batch_size, "cpu", None, progress=False)


def run(model, conds, guidance, prior=None, seeds=range(5), batch_size=2, **kw):
    return sample(
        model,
        conds,
        guidance,
        prior=prior,
        seeds=list(seeds),
        shape=SHAPE,
        steps=3,
        scheduler="ddim",
        scheduler_config=SCHED,
        batch_size=batch_size,
        **kw,
    )


def test_single_cfg_equals_the_hand_written_glue_vanilla_and_swapped():
    model, prior = Toy(0.1), Toy(0.7, "prior")
    c = torch.tensor([0.5, 0.9, 1.3, 0.2, 0.4])
    g = Guidance(scale=2.0)
    for p in (None, prior):
        want = old_glue(model, lambda part, p=p: cfg_eps(model, c[part], g, p), list(range(5)), 2)
        assert torch.equal(run(model, c, g, p), want)
    assert not torch.equal(run(model, c, g), run(model, c, g, prior))  # the prior really supplies the uncond term


def test_dual_guidance_type_picks_eq9_with_a_pair_of_conditions():
    model, prior = Toy(0.1), Toy(0.7, "prior")
    full, image_only = torch.tensor([0.5, 0.9, 1.3]), torch.tensor([0.3, 0.6, 0.8])
    g = DualGuidance(image_scale=1.5, text_scale=4.0)
    want = old_glue(model, lambda part: dual_cfg_eps(model, full[part], image_only[part], g, prior), [0, 1, 2], 2)
    assert torch.equal(run(model, (full, image_only), g, prior, seeds=range(3)), want)
    with pytest.raises(PriorswapError, match="needs the pair"):
        run(model, full, g, seeds=range(3))


def test_conditions_per_sample_shared_or_callable_give_the_same_samples():
    model = Toy()
    g = Guidance(scale=3.0)
    per_sample = run(model, torch.full((5,), 0.6), g)
    assert torch.equal(run(model, torch.tensor([0.6]), g), per_sample)  # one row is shared by every sample
    assert torch.equal(run(model, lambda part: torch.full((part.stop - part.start,), 0.6), g), per_sample)
    with pytest.raises(PriorswapError) as e:
        run(model, torch.ones(3), g)
    assert "\n" not in str(e.value) and "3 rows for 5 samples" in str(e.value)


def test_unconditional_sampling_is_the_models_own_null():
    model, prior = Toy(0.1), Toy(0.7, "prior")
    want = old_glue(model, lambda part: lambda x, t: model(x, t, None), list(range(5)), 2)
    assert torch.equal(run(model, None, Guidance(scale=1.0)), want)
    assert torch.equal(run(model, None, Guidance(scale=4.0)), want)  # nothing to guide towards
    with pytest.raises(PriorswapError, match="pass the prior itself as the model"):
        run(model, None, Guidance(), prior)


def test_scheduler_by_name_needs_the_model_schedule_and_objects_are_accepted():
    model, c, g = Toy(), torch.tensor([0.5]), Guidance(scale=2.0)
    with pytest.raises(PriorswapError, match="scheduler_config"):
        sample(model, c, g, seeds=[0], shape=SHAPE, steps=3, scheduler="ddim")
    by_name = run(model, c, g, seeds=[0])
    by_object = sample(model, c, g, seeds=[0], shape=SHAPE, steps=3, scheduler=make_scheduler("ddim", SCHED))
    assert torch.equal(by_name, by_object)


# -- evaluation summary: acc_* whenever a classifier is given ---------------------------------------------
def extractor():
    return ModuleExtractor(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), 3, "mean-colour")


def test_zero_percent_accurate_classifier_still_reports_acc():
    """Labels are i % 2; the classifier always says class 2, so it never agrees: acc must be 0.0, not missing."""

    class Pixels(Toy):  # 3 channels in pixel space, so images go straight to the extractor
        def __init__(self, null):
            ModelDenoiser.__init__(self, LatentSpace(alphas_cumprod(SCHED), "epsilon", 3), "pixels")
            self.null = null

    never_right = lambda images: torch.tensor([[0.0, 0.0, 1.0]]).repeat(len(images), 1)  # noqa: E731
    settings = EvalSettings(guidance_scales=(1.5,), num_samples=4, steps=2, batch_size=2)
    local = evaluate_local(Pixels(0.1), Pixels(0.7), 2, settings, SCHED, None, extractor(), never_right)
    values = summarise(local, FeatureStats(3).add(torch.rand(8, 3)))
    assert values["acc_vanilla_g1.5"] == 0.0 and values["acc_swapped_g1.5"] == 0.0 and values["acc_delta_g1.5"] == 0.0
    no_classifier = summarise(
        evaluate_local(Pixels(0.1), Pixels(0.7), 2, settings, SCHED, None, extractor()),
        FeatureStats(3).add(torch.rand(8, 3)),
    )
    assert not any(k.startswith("acc_") for k in no_classifier)


def test_rank_without_hits_reports_the_gathered_accuracy():
    """Two ranks simulated in one process: rank 0 has no correct sample, rank 1 has all of its; rank 0 (which
    logs) must report the summed 50%, as every rank must."""
    from priorswap.toolkit.evaluation import ModeResult

    def result(correct):
        res = ModeResult(FeatureStats(3).add(torch.rand(2, 3)), correct=correct, count=2.0, classified=True)
        return {(1.5, "vanilla"): res, (1.5, "swapped"): res}

    reference = FeatureStats(3).add(torch.rand(8, 3))
    sent = []
    summarise(result(2.0), reference, all_reduce=lambda t: sent.append(t.clone()) or t)  # rank 1's contributions
    received = iter(sent)
    values = summarise(result(0.0), reference, all_reduce=lambda t: t + next(received))  # rank 0 adds rank 1's
    assert values["acc_vanilla_g1.5"] == 0.5 and values["acc_swapped_g1.5"] == 0.5
