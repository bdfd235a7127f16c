"""DiT LoRA fine-tuning: adapter off stays the base bit for bit, resume is exact, checkpoints hold only what
trains, and the export reloads and samples (tiny pixel-space models, CPU)."""

import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from priorswap.data import Food101DataModule
from priorswap.toolkit.dit.denoiser import label_embedders
from priorswap.toolkit.dit.load import load_dit
from priorswap.toolkit.dit.lora import LoRASpec, table
from priorswap.toolkit.lora import BASE, BasePrior, per_sample_adapters
from priorswap.toolkit.training.module import DiTFineTune

from factories import save_dit_pipeline
from fakedata import make_food101
from trainers import Kill, trainer


@pytest.fixture(scope="module")
def food(tmp_path_factory):
    return make_food101(str(tmp_path_factory.mktemp("food")), classes=3, per_class=8)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_dit_pipeline(
        str(tmp_path_factory.mktemp("base") / "dit"), num_classes=10, sample_size=16, latent=False, in_channels=3
    )


def dm(food):
    return Food101DataModule(root=food, resolution=16, batch_size=8, num_workers=0)


def lora_module(base, **kw):
    args = dict(
        pretrained=base,
        vae=None,
        num_classes=3,
        lora=LoRASpec(rank=4, alpha=8),
        ema_decay=0.9,
        lr=1e-2,
        weight_decay=0.1,
        export_on_fit_end=False,
    )
    return DiTFineTune(**{**args, **kw})


def test_adapter_off_is_the_base_bit_for_bit_after_adamw_with_weight_decay(tmp_path, base, food, capsys):
    model = lora_module(base)
    trainer(tmp_path, 3).fit(model, dm(food))
    assert "trainable of" in capsys.readouterr().out  # trainable vs total parameters printed
    ref = load_dit(base).denoiser
    for emb, old in zip(label_embedders(model.transformer), label_embedders(ref.transformer)):
        assert torch.equal(table(emb).weight[:11], old.embedding_table.weight)  # base rows and null row: 0.0 change
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([10, 300, 600, 999])
    ids = torch.tensor([0, 4, 9, 10])  # ids <= N, the null id N included
    with torch.no_grad():
        expected = ref.transformer(x, timestep=t, class_labels=ids).sample
        for live in (model.denoiser(ema=True), model.denoiser(ema=False)):
            with per_sample_adapters(live.transformer, [BASE] * 4):
                off = live.transformer(x, timestep=t, class_labels=ids).sample
            assert torch.equal(off, expected)
            assert torch.equal(BasePrior(live)(x, t, None), ref(x, t, None))
            assert not torch.equal(live(x, t, None), ref(x, t, None))  # the adapter trained


def test_lora_resume_is_exact_and_checkpoint_holds_only_what_trains(tmp_path, base, food):
    L.seed_everything(0)
    full = lora_module(base)
    trainer(tmp_path / "a", 5).fit(full, dm(food))

    part = lora_module(base)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "b"), every_n_train_steps=2, save_last=True)
    with pytest.raises(RuntimeError, match="simulated kill"):
        trainer(tmp_path / "b", 5, callbacks=[ckpt, Kill(3)]).fit(part, dm(food))
    state = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True, map_location="cpu")
    trainable = {n for n, p in part.transformer.named_parameters() if p.requires_grad}
    assert {k.split(".", 1)[1] for k in state["state_dict"] if k.startswith("transformer.")} == trainable
    assert all("lora_" in k or "trainable_tokens" in k or k == "ema.n_averaged" for k in state["state_dict"])
    L.seed_everything(123)
    resumed = lora_module(base)
    t = trainer(tmp_path / "b", 5, callbacks=[ModelCheckpoint(dirpath=str(tmp_path / "b"), save_last=True)])
    t.fit(resumed, dm(food), ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert resumed.global_step == full.global_step == 5
    for net in ("transformer", "ema.module"):
        a = dict(full.get_submodule(net).named_parameters())
        b = dict(resumed.get_submodule(net).named_parameters())
        for k in a:
            assert torch.equal(a[k], b[k]), (net, k)
    assert int(full.ema.n_averaged) == int(resumed.ema.n_averaged) == 5


def test_lora_checkpoint_is_a_small_fraction_of_a_full_one(tmp_path, base, food):
    sizes = {}
    for name, lora in (("lora", LoRASpec(rank=4)), ("full", None)):
        model = lora_module(base, lora=lora)
        ckpt = ModelCheckpoint(dirpath=str(tmp_path / name), save_last=True)
        trainer(tmp_path / name, 1, callbacks=[ckpt]).fit(model, dm(food))
        sizes[name] = os.path.getsize(tmp_path / name / "last.ckpt")
    print(f"checkpoint sizes: LoRA {sizes['lora']} B, full {sizes['full']} B ({sizes['lora'] / sizes['full']:.3f})")
    assert sizes["lora"] < 0.35 * sizes["full"]


def test_lora_export_reloads_and_samples(tmp_path, base, food):
    names = dm(food).class_names
    model = lora_module(base, class_names=names, export_dir=str(tmp_path / "export"), export_on_fit_end=True)
    trainer(tmp_path, 2).fit(model, dm(food))
    export = tmp_path / "export"
    assert sorted(os.listdir(export)) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "id2label.json",
        "priorswap_lora.json",
    ]
    loaded = load_dit(str(export))
    den = loaded.denoiser
    assert den.num_classes == 3 and den.null_id == 10 and loaded.id2label == dict(enumerate(names))
    x, t, labels = torch.randn(2, 3, 16, 16), torch.tensor([100, 800]), torch.tensor([0, 2])
    ema = model.denoiser()
    assert (den(x, t, labels) - ema(x, t, labels)).abs().max() <= 1e-6  # the EMA adapter, reloaded
    assert (den(x, t, None) - ema(x, t, None)).abs().max() <= 1e-6
    from priorswap.toolkit.api import sample_dit

    images = sample_dit(str(export), labels=[0, 2], prior="base", steps=3, progress=False)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_eval_callback_uses_the_free_prior_during_a_lora_fine_tune(tmp_path, base, food, monkeypatch):
    import json

    from priorswap.callbacks import PriorSwapEval
    from priorswap.toolkit.lora import FreePriorDenoiser
    from priorswap.toolkit.metrics import ModuleExtractor

    def no_second_model(*a, **k):
        raise AssertionError("a LoRA fine-tune's evaluation must not load a second model")

    monkeypatch.setattr("priorswap.callbacks.cfg_eval.load_prior", no_second_model)
    calls = []
    original = FreePriorDenoiser.predict
    monkeypatch.setattr(FreePriorDenoiser, "predict", lambda self, *a: calls.append(1) or original(self, *a))
    cb = PriorSwapEval(
        guidance_scales=[2.0],
        num_samples=4,
        steps=2,
        batch_size=4,
        every_n_steps=None,
        extractor=ModuleExtractor(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()), 12, "pool"),
        reference_samples=4,
        stats_cache=None,
        grid_samples=2,
        output=str(tmp_path / "cfg_eval.csv"),
    )
    model = lora_module(base)
    trainer(tmp_path, 2, callbacks=[cb], enable_checkpointing=False).fit(model, dm(food))
    assert calls and cb.prior.name.startswith("the base inside")
    with open(tmp_path / "cfg_eval.jsonl") as f:
        row = json.loads(f.readline())
    assert row["step"] == 2 and any(k.endswith("_swapped_g2") for k in row)


def test_priorswap_export_of_a_lora_checkpoint(tmp_path, base, food):
    from priorswap.toolkit.cli import main

    model = lora_module(base, class_names=dm(food).class_names)
    trainer(tmp_path, 2, callbacks=[ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)]).fit(
        model, dm(food)
    )
    assert main(["export", "--ckpt", str(tmp_path / "ckpt" / "last.ckpt"), "--out", str(tmp_path / "out")]) == 0
    loaded = load_dit(str(tmp_path / "out"))
    x, t, labels = torch.randn(2, 3, 16, 16), torch.tensor([100, 800]), torch.tensor([0, 2])
    assert torch.equal(loaded.denoiser(x, t, labels), model.denoiser()(x, t, labels))
    assert loaded.id2label == dict(enumerate(dm(food).class_names))
