"""The free prior's one mixed batch equals separate forwards (DiT, PixArt, SD UNet), with non-zero LoRA B."""

import copy

import pytest
import torch

from priorswap.toolkit.core.denoisers import LatentSpace
from priorswap.toolkit.core.sampling import Guidance, sample
from priorswap.toolkit.dit.denoiser import DiTDenoiser
from priorswap.toolkit.dit.lora import LoRADiTDenoiser, LoRASpec, add_class_rows, inject, lora_config
from priorswap.toolkit.dit.models import build_dit, dit_scheduler_config
from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.lora import BASE, BasePrior, FreePriorDenoiser, per_sample_adapters
from priorswap.toolkit.training.diffusion_loss import DiffusionSchedule

from factories import tiny_pixart_transformer

TOL = 1e-6


def nonzero_adapter(net: torch.nn.Module, seed: int = 1) -> None:
    """Give every LoRA B matrix and trainable-token row random values (peft starts B at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name or "lora_A" in name or "trainable_tokens_delta" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def space():
    from diffusers import DDPMScheduler

    betas = DDPMScheduler.from_config(dit_scheduler_config()).betas
    return LatentSpace(DiffusionSchedule.from_betas(betas).alphas_cumprod, "epsilon", 4)


def tiny_dit_lora(k: int = 3, n: int = 10, dora: bool = False):
    torch.manual_seed(0)
    base = build_dit("tiny", num_classes=n, in_channels=4, sample_size=8)
    with torch.no_grad():
        for p in base.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    tr = copy.deepcopy(base)
    add_class_rows(tr, k)
    config = lora_config(LoRASpec(rank=4), n, k)
    config.use_dora = dora
    tr = inject(tr, config)
    nonzero_adapter(tr)
    return DiTDenoiser(base, space(), "base"), LoRADiTDenoiser(tr, space(), k, "lora")


def test_dit_mixed_batch_equals_separate_forwards():
    base, lora = tiny_dit_lora()
    x, t, labels = torch.randn(4, 4, 8, 8), torch.full((4,), 500), torch.tensor([0, 1, 2, 1])
    cond, uncond = FreePriorDenoiser(lora).predict(x, t, [labels, None])  # one forward of 2B
    assert (cond - lora(x, t, labels)).abs().max() <= TOL  # adapter on, its own batch
    assert (uncond - base(x, t, None)).abs().max() <= TOL  # the base model, separately
    assert (cond - base(x, t, labels)).abs().max() > 1e-3  # the adapter really does something
    assert (lora(x, t, None) - uncond).abs().max() > 1e-3  # and the LoRA's own null differs from the base's


def test_dit_prior_mix_blends_own_and_base_null_in_one_batch():
    base, lora = tiny_dit_lora()
    x, t = torch.randn(2, 4, 8, 8), torch.full((2,), 300)
    _, u = FreePriorDenoiser(lora, prior_mix=0.25).predict(x, t, [torch.tensor([0, 2]), None])
    expected = 0.25 * base(x, t, None) + 0.75 * lora(x, t, None)
    assert (u - expected).abs().max() <= TOL


def test_sampling_with_base_prior_equals_two_model_swap():
    base, lora = tiny_dit_lora()
    labels = torch.tensor([0, 1, 2])
    kw = dict(seeds=[0, 1, 2], shape=(4, 8, 8), steps=4, scheduler_config=dit_scheduler_config())
    g = Guidance(scale=3.0, interval=(0.1, 0.9), rescale_phi=0.3)
    free = sample(lora, labels, g, prior=BasePrior(lora), **kw)
    two = sample(lora, labels, g, prior=base, **kw)
    vanilla = sample(lora, labels, g, **kw)
    assert (free - two).abs().max() <= 1e-5
    assert (free - vanilla).abs().max() > 1e-3


def test_base_prior_alone_is_the_base_and_moves_nothing():
    base, lora = tiny_dit_lora()
    x, t = torch.randn(2, 4, 8, 8), torch.full((2,), 700)
    prior = BasePrior(lora)
    assert (prior(x, t, None) - base(x, t, None)).abs().max() <= TOL
    assert prior.to("meta") is prior and lora.device.type == "cpu"
    _, other = tiny_dit_lora()
    with pytest.raises(PriorswapError, match="prior of its own LoRA only"):
        prior.fuse(other, 1.0)


def raw_mixed_vs_separate(net, inputs: dict, on_key: str = "hidden_states"):
    """max |mixed - separate| for a raw network: samples [0, B) adapter on, [B, 2B) off."""
    b = next(iter(inputs.values())).shape[0] // 2
    adapter = "default"
    net.eval()
    with torch.no_grad(), per_sample_adapters(net, [adapter] * b + [BASE] * b):
        mixed = net(**inputs).sample
    first = {k: v[:b] for k, v in inputs.items()}
    second = {k: v[b:] for k, v in inputs.items()}
    with torch.no_grad():
        on = net(**first).sample
        with per_sample_adapters(net, [BASE] * b):
            off = net(**second).sample
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in net.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.enable_adapters(False)
    with torch.no_grad():
        plain_off = net(**second).sample
    for m in layers:
        m.enable_adapters(True)
    return (
        (mixed[:b] - on).abs().max().item(),
        (mixed[b:] - off).abs().max().item(),
        (off - plain_off).abs().max().item(),
        (on - plain_off).abs().max().item(),
    )


def test_pixart_mixed_batch_equals_separate_forwards():
    from peft import LoraConfig, inject_adapter_in_model

    net = tiny_pixart_transformer(0)
    targets = ["to_q", "to_k", "to_v", "to_out.0", "proj", "linear"]
    net = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=targets), net)
    nonzero_adapter(net)
    inputs = {
        "hidden_states": torch.randn(4, 4, 8, 8),
        "encoder_hidden_states": torch.randn(4, 6, 32),
        "timestep": torch.tensor([10, 500, 10, 500]),
    }
    net.eval()

    def fwd(**kw):
        return net(**kw, added_cond_kwargs={"resolution": None, "aspect_ratio": None})

    on_err, off_err, off_is_base, on_differs = raw_mixed_vs_separate(_Call(fwd, net), inputs)
    assert on_err <= TOL and off_err <= TOL and off_is_base <= TOL and on_differs > 1e-3


def test_sd_unet_mixed_batch_equals_separate_forwards():
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=4,
    )
    unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"])
    )
    nonzero_adapter(unet)
    inputs = {
        "sample": torch.randn(4, 4, 8, 8),
        "encoder_hidden_states": torch.randn(4, 5, 32),
        "timestep": torch.tensor([10, 500, 10, 500]),
    }
    on_err, off_err, off_is_base, on_differs = raw_mixed_vs_separate(_Call(lambda **kw: unet(**kw), unet), inputs)
    assert on_err <= TOL and off_err <= TOL and off_is_base <= TOL and on_differs > 1e-3


class _Call(torch.nn.Module):
    """A network with a fixed forward (extra keyword arguments), for raw_mixed_vs_separate."""

    def __init__(self, fn, net):
        super().__init__()
        self.fn, self.net = fn, net

    def forward(self, **kw):
        return self.fn(**kw)


@pytest.mark.parametrize("problem", ["dora", "merged", "train"])
def test_unmixable_adapters_are_refused_in_one_line(problem):
    _, lora = tiny_dit_lora(dora=problem == "dora")
    if problem == "merged":
        from peft.tuners.lora import LoraLayer

        for m in lora.transformer.modules():
            if isinstance(m, LoraLayer):
                m.merge()
    else:
        lora.transformer.train()
    with pytest.raises(PriorswapError, match={"dora": "DoRA", "merged": "merged", "train": "train mode"}[problem]) as e:
        BasePrior(lora)
    assert "\n" not in str(e.value)


def test_paired_base_prior_still_fuses_into_one_forward():
    """pair() wraps the prior; the wrapper must keep the free prior's fusing, so swapped CFG stays one forward."""
    from priorswap.toolkit.core.pairing import pair

    _, lora = tiny_dit_lora()
    labels = torch.tensor([0, 1, 2])
    kw = dict(seeds=[0, 1, 2], shape=(4, 8, 8), steps=3, scheduler_config=dit_scheduler_config())
    paired = pair(lora, BasePrior(lora), (8, 8))
    assert isinstance(paired.fuse(lora, 1.0), FreePriorDenoiser)
    g = Guidance(scale=3.0)
    assert torch.equal(
        sample(lora, labels, g, prior=paired, **kw), sample(lora, labels, g, prior=BasePrior(lora), **kw)
    )


def test_lora_denoiser_is_a_dit_denoiser_with_rows_after_the_null():
    """LoRADiTDenoiser is DiTDenoiser's own init with K new rows: class c is row N + 1 + c, the null stays N."""
    _, lora = tiny_dit_lora(k=3, n=10)
    plain = DiTDenoiser(lora.transformer, space(), "same network", new_rows=3)
    assert (
        (plain.num_classes, plain.null_id, plain.first_id)
        == (lora.num_classes, lora.null_id, lora.first_id)
        == (3, 10, 11)
    )
    x, t, labels = torch.randn(2, 4, 8, 8), torch.full((2,), 400), torch.tensor([0, 2])
    assert torch.equal(plain(x, t, labels), lora(x, t, labels)) and torch.equal(plain(x, t, None), lora(x, t, None))
    with pytest.raises(PriorswapError, match="label table has 3 new rows for 5 classes"):
        LoRADiTDenoiser(lora.transformer, space(), 5, "lora")
