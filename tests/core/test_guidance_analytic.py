"""Guidance, prediction-type conversion and schedule pairing against closed-form Gaussian denoisers.

For x_0 ~ N(mu, s^2 I) and x_t = sqrt(a) x_0 + sqrt(1 - a) eps, the exact E[eps | x_t] is
sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a). Denoisers that output this (as eps, v or x0, on either
schedule) must give exactly the expected guided eps.
"""

import pytest
import torch

from priorswap.toolkit.core.denoisers import LatentSpace, ModelDenoiser
from priorswap.toolkit.core.guidance import cfg, dual_cfg, in_interval, mix_prior, rescale
from priorswap.toolkit.core.loading import alphas_cumprod
from priorswap.toolkit.core.pairing import PairedPrior, schedule_mismatch
from priorswap.toolkit.core.sampling import DualGuidance, Guidance, cfg_eps, dual_cfg_eps
from priorswap.toolkit.core.schedules import alpha_bar_at, from_eps, nearest_timestep, to_eps
from priorswap.toolkit.dit.models import dit_scheduler_config

from factories import SD_SCHEDULE

LINEAR = alphas_cumprod(dit_scheduler_config())
SCALED = alphas_cumprod(SD_SCHEDULE)


def exact_eps(x_t, a, mu, s):
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1, *([1] * (x_t.ndim - 1)))
    return ((1 - a).sqrt() * (x_t.double() - a.sqrt() * mu) / (a * s**2 + 1 - a)).float()


class Gaussian(ModelDenoiser):
    """Outputs the exact posterior eps of Gaussian data, expressed as ``prediction_type`` on ``table``."""

    def __init__(self, table, prediction_type, classes, null):
        super().__init__(LatentSpace(table, prediction_type, channels=4), name="gaussian")
        self.classes, self.null = classes, null  # cond -> (mu, s)

    def forward_batch(self, x, t, conds):
        b = x.shape[0] // len(conds)
        a = alpha_bar_at(self.alphas_cumprod, t)
        outs = []
        for i, c in enumerate(conds):
            mu, s = self.null if c is None else self.classes[c]
            xs, ai = x[i * b : (i + 1) * b], a[i * b : (i + 1) * b]
            outs.append(from_eps(exact_eps(xs, ai, mu, s), xs, ai, self.prediction_type))
        return torch.cat(outs)


CLASSES = {"cat": (1.5, 0.5), "dog": (-0.7, 0.3)}
FT_NULL = (0.2, 2.0)  # a degraded unconditional prior
BASE_NULL = (0.4, 1.0)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_conversion_roundtrip(ptype):
    x, e = torch.randn(3, 4, 5, 5, dtype=torch.float64), torch.randn(3, 4, 5, 5, dtype=torch.float64)
    a = torch.tensor([0.9, 0.5, 0.02], dtype=torch.float64)
    assert torch.allclose(to_eps(from_eps(e, x, a, ptype), x, a, ptype), e, atol=1e-10)


def test_v_and_x0_formulas_match_definitions():
    a = torch.tensor([0.3], dtype=torch.float64)
    x0, e = torch.randn(1, 4, 2, 2, dtype=torch.float64), torch.randn(1, 4, 2, 2, dtype=torch.float64)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * e
    v = a.sqrt() * e - (1 - a).sqrt() * x0  # Salimans & Ho 2022
    assert torch.allclose(to_eps(v, x_t, a, "v_prediction"), e, atol=1e-12)
    assert torch.allclose(to_eps(x0, x_t, a, "sample"), e, atol=1e-12)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("table", [LINEAR, SCALED], ids=["linear", "scaled_linear"])
def test_denoiser_returns_exact_eps_on_own_schedule(ptype, table):
    d = Gaussian(table, ptype, CLASSES, FT_NULL)
    x, t = torch.randn(2, 4, 3, 3), torch.tensor([10, 700])
    a = table[t]
    assert torch.allclose(d(x, t, "cat"), exact_eps(x, a, *CLASSES["cat"]), atol=1e-4)
    assert torch.allclose(d(x, t, None), exact_eps(x, a, *FT_NULL), atol=1e-4)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_bridged_prior_uses_nearest_alpha_bar_and_its_own_alpha(ptype):
    """A scaled_linear prior under a linear-schedule sampler is called at t' = argmin |a'(t') - a(t)|."""
    prior = PairedPrior(Gaussian(SCALED, ptype, {}, BASE_NULL), LINEAR)  # sampled on LINEAR
    t = torch.tensor([0, 250, 500, 999])
    x = torch.randn(4, 4, 3, 3)
    t_prime = nearest_timestep(SCALED, LINEAR[t])
    assert not torch.equal(t_prime, t)  # the schedules really differ
    got = prior(x, t, None)
    assert torch.allclose(got, exact_eps(x, SCALED[t_prime], *BASE_NULL), atol=1e-4)
    # residual mismatch stays below the documented bound
    gap = (SCALED[t_prime] - LINEAR[t]).abs().max().item()
    assert gap <= schedule_mismatch(Gaussian(LINEAR, "epsilon", {}, BASE_NULL), prior) + 1e-12
    assert schedule_mismatch(Gaussian(LINEAR, "epsilon", {}, BASE_NULL), prior) < 5e-3


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_vanilla_and_swapped_cfg_match_closed_form(ptype):
    ft = Gaussian(LINEAR, "epsilon", CLASSES, FT_NULL)
    base = PairedPrior(Gaussian(SCALED, ptype, {}, BASE_NULL), LINEAR)  # sampled on LINEAR
    x, t, g = torch.randn(3, 4, 4, 4), torch.tensor(400), 3.0
    a = LINEAR[400]
    c = exact_eps(x, a, *CLASSES["dog"])
    vanilla = cfg_eps(ft, "dog", Guidance(scale=g))(x, t)
    assert torch.allclose(vanilla, exact_eps(x, a, *FT_NULL) + g * (c - exact_eps(x, a, *FT_NULL)), atol=1e-4)  # Eq. 6
    a_base = SCALED[nearest_timestep(SCALED, a.reshape(1))]
    u = exact_eps(x, a_base, *BASE_NULL)
    swapped = cfg_eps(ft, "dog", Guidance(scale=g), prior=base)(x, t)
    assert torch.allclose(swapped, u + g * (c - u), atol=1e-4)  # Eq. 7
    half = cfg_eps(ft, "dog", Guidance(scale=g, prior_mix=0.25), prior=base)(x, t)
    u_mix = 0.25 * u + 0.75 * exact_eps(x, a, *FT_NULL)
    assert torch.allclose(half, u_mix + g * (c - u_mix), atol=1e-4)


def test_prior_equal_to_model_gives_vanilla():
    ft = Gaussian(LINEAR, "epsilon", CLASSES, FT_NULL)
    x, t = torch.randn(2, 4, 4, 4), torch.tensor(123)
    assert torch.allclose(
        cfg_eps(ft, "cat", Guidance(scale=2.0), prior=ft)(x, t),
        cfg_eps(ft, "cat", Guidance(scale=2.0))(x, t),
        atol=1e-6,
    )


def test_dual_cfg_swaps_only_fully_unconditional_term():
    classes = {"img+txt": (1.0, 0.5), "img": (0.5, 0.8)}
    ft = Gaussian(LINEAR, "epsilon", classes, FT_NULL)
    base = Gaussian(LINEAR, "v_prediction", {}, BASE_NULL)
    x, t, a = torch.randn(2, 4, 4, 4), torch.tensor(600), LINEAR[600]
    full, img = exact_eps(x, a, *classes["img+txt"]), exact_eps(x, a, *classes["img"])
    gi, gt = 1.5, 7.5
    for prior, null in ((None, FT_NULL), (base, BASE_NULL)):
        u = exact_eps(x, a, *null)
        got = dual_cfg_eps(ft, "img+txt", "img", DualGuidance(image_scale=gi, text_scale=gt), prior=prior)(x, t)
        assert torch.allclose(got, u + gi * (img - u) + gt * (full - img), atol=1e-4)  # Eq. 9


def test_guidance_extras():
    c, u = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    three = cfg(c, u, 2.0, guided_channels=3)
    assert torch.allclose(three[:, :3], u[:, :3] + 2 * (c[:, :3] - u[:, :3]))
    assert torch.equal(three[:, 3:], c[:, 3:])  # the original DiT code leaves channel 4 unguided
    assert torch.equal(cfg(c, u, 2.0, guided_channels=None), u + 2 * (c - u))
    assert torch.equal(mix_prior(c, u, 1.0), c) and torch.equal(mix_prior(c, u, 0.0), u)
    g = cfg(c, u, 4.0)
    r = rescale(g, c, 1.0)
    assert torch.allclose(r.std(dim=(1, 2, 3)), c.std(dim=(1, 2, 3)), atol=1e-5)
    assert torch.equal(rescale(g, c, 0.0), g)
    assert in_interval(0.5, (0.2, 0.8)) and not in_interval(0.9, (0.2, 0.8)) and in_interval(0.9, None)
    assert torch.allclose(dual_cfg(c, c, u, 1.0, 5.0), c, atol=1e-6)  # u + (c - u) rounds near 0


def test_guidance_interval_uses_conditional_eps_outside_window():
    ft = Gaussian(LINEAR, "epsilon", CLASSES, FT_NULL)
    x = torch.randn(1, 4, 4, 4)
    fn = cfg_eps(ft, "cat", Guidance(scale=3.0, interval=(0.0, 0.5)))
    assert torch.allclose(fn(x, torch.tensor(900)), ft(x, torch.tensor(900), "cat"))
    assert not torch.allclose(fn(x, torch.tensor(100)), ft(x, torch.tensor(100), "cat"))
