"""The fine-tune hands out its own denoiser; the evaluation callback only assembles parts, in Lightning's hook order."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from priorswap.callbacks import PriorSwapEval
from priorswap.data import Food101DataModule
from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.metrics import ModuleExtractor
from priorswap.toolkit.training.module import DiTFineTune

from fakedata import make_food101


def tiny_module(**kw) -> DiTFineTune:
    torch.manual_seed(0)
    return DiTFineTune(pretrained=None, vae=None, size="tiny", in_channels=3, sample_size=16, **kw)


def test_denoiser_wraps_the_ema_weights_on_the_modules_schedule():
    model = tiny_module(num_classes=3)
    with pytest.raises(PriorswapError, match="no label table yet"):
        model.denoiser()
    model.configure_model()
    den = model.denoiser()
    assert den.transformer is model.ema.module and den.num_classes == 3 and den.null_id == 3
    assert torch.equal(den.alphas_cumprod, model.schedule.alphas_cumprod.to(torch.float64))
    assert den.space.vae_scaling_factor is None and den.latent_channels == 3  # pixel space
    x, t = torch.randn(1, 3, 16, 16), torch.tensor(500)
    with torch.no_grad():
        want = model.ema.module(x.repeat(2, 1, 1, 1), timestep=t.expand(2), class_labels=torch.tensor([0, 3])).sample[
            :, :3
        ]
    torch.testing.assert_close(den.predict(x, t, [torch.tensor([0]), None]), list(want.chunk(2)))


def test_live_weights_are_a_frozen_snapshot_that_leaves_training_alone():
    model = tiny_module(num_classes=3)
    model.configure_model()
    snap = model.denoiser(ema=False)
    assert model.transformer.training and all(p.requires_grad for p in model.transformer.parameters())
    before = {k: v.clone() for k, v in snap.transformer.state_dict().items()}
    with torch.no_grad():
        next(model.transformer.parameters()).add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in snap.transformer.state_dict().items())


def features():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    return ModuleExtractor(net, 12, "pool")


def fit(tmp_path, food, max_steps, ckpt_path=None):
    cb = PriorSwapEval(
        prior="initial", extractor=features(), num_samples=2, steps=2, every_n_steps=None, at_fit_end=False
    )
    model = tiny_module(
        num_classes=3, lr=1e-2, ema_decay=0.5, export_on_fit_end=False
    )  # the CLI links it from the data
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=1, save_last=True)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        callbacks=[cb, ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
    )
    trainer.fit(model, Food101DataModule(root=food, resolution=16, batch_size=2, num_workers=0), ckpt_path=ckpt_path)
    return cb, model


def test_callback_uses_lightnings_hook_order_and_initial_prior_survives_resume(tmp_path, monkeypatch):
    food = make_food101(str(tmp_path / "food"), classes=3, per_class=4)
    calls = []
    real = DiTFineTune.configure_model
    monkeypatch.setattr(DiTFineTune, "configure_model", lambda self: calls.append(1) or real(self))
    first, model = fit(tmp_path, food, max_steps=2)
    assert len(calls) == 1  # only Lightning calls it; the callback no longer does
    initial = {k: v.clone() for k, v in first.prior.transformer.state_dict().items()}
    trained = model.transformer.state_dict()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)  # training moved the weights
    resumed, _ = fit(tmp_path, food, max_steps=3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.prior.name == "initial weights"
    assert all(torch.equal(initial[k], v) for k, v in resumed.prior.transformer.state_dict().items())
