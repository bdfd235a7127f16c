"""Text-to-image fine-tunes (SD eps / v, SDXL, SD3 flow, PixArt learned sigma) on tiny random pipelines, CPU.

Each family's step is checked against a step written here from diffusers' own pieces (its scheduler, its training
utilities, the components loaded by ``DiffusionPipeline.from_pretrained``) with the same noise and timesteps.
"""

import os
import warnings

os.environ["HF_HUB_OFFLINE"] = "1"

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_loss_weighting_for_sd3, compute_snr
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.training.t2i_export import T2ILoRA
from priorswap.toolkit.training.t2i_loss import predict
from priorswap.toolkit.training.t2i_module import T2IFineTune
from priorswap.toolkit.training.text_cache import CachedT2IDataset, build_t2i_cache, collate_items, t2i_cache_dir
from priorswap.toolkit.unet.tiny import save_sd

from t2i_train_factories import save_pixart, save_sd3, save_sdxl
from trainers import Kill, trainer

CAPTIONS = ["a red cat", "blue", "two dogs", "x"]
SAVERS = {
    "sd": save_sd,
    "sd_v": lambda d: save_sd(d, prediction_type="v_prediction"),
    "sdxl": save_sdxl,
    "sd3": save_sd3,
    "pixart": save_pixart,
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    return {name: save(str(root / name)) for name, save in SAVERS.items()}


class Captioned(Dataset):
    """n seeded images with captions and SDXL size metadata, in the captioned datamodules' item format."""

    def __init__(self, n=4, bad=None):
        self.x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
        self.bad = bad

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i == self.bad:
            return None
        size = torch.tensor([32 + 8 * i, 48]) if i % 2 else torch.tensor([32, 32])
        return {
            "pixels": self.x[i],
            "caption": CAPTIONS[i % 4],
            "original_size": size,
            "crop_top_left": torch.tensor([i, 2 * i]),
            "index": i,
        }


class CaptionedDM(L.LightningDataModule):
    """In-order batches of ``Captioned``; with ``t2i_cache`` set, cached rows once the module has built them."""

    def __init__(self, n=4, batch_size=2, t2i_cache=None):
        super().__init__()
        self.ds, self.batch_size, self.t2i_cache = Captioned(n), batch_size, t2i_cache
        self.built = 0

    def build_t2i_cache(self, encode, encoder_id):
        folder = t2i_cache_dir(self.t2i_cache, "captioned-test", encoder_id, 32)
        build_t2i_cache(folder, self.ds, encode, chunk_size=2)
        self.ds, self.built = CachedT2IDataset(folder), self.built + 1

    def train_dataloader(self):
        collate = None if isinstance(self.ds, CachedT2IDataset) else collate_items
        return DataLoader(self.ds, batch_size=self.batch_size, shuffle=False, collate_fn=collate)


def batch(n=2):
    return collate_items([Captioned(n)[i] for i in range(n)])


def draws(module, b, flow):
    g = torch.Generator().manual_seed(7)
    shape = (b, 4, 16, 16)
    d = {"latent_noise": torch.randn(shape, generator=g), "drop": torch.tensor([False, True])}
    d["u" if flow else "t"] = torch.rand(b, generator=g) if flow else torch.randint(0, 1000, (b,), generator=g)
    d["noise"] = torch.randn(shape, generator=g)
    return d


# -- the reference steps, from diffusers' pieces ------------------------------------------------------------
def clip_states(tok, enc, captions, layer):
    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    out = enc(ids.input_ids, output_hidden_states=True)
    return out.hidden_states[layer] if layer is not None else out[0], out


def reference_loss(name, folder, b, d):
    pipe = DiffusionPipeline.from_pretrained(folder)
    net = pipe.unet if name.startswith("sd") and name != "sd3" else pipe.transformer
    drop = d["drop"].view(-1, 1, 1)
    dist = pipe.vae.encode(b["pixels"]).latent_dist
    z = dist.mean + dist.std * d["latent_noise"]
    shift = pipe.vae.config.shift_factor or 0.0
    x0 = (z - shift) * pipe.vae.config.scaling_factor
    if name == "sd3":
        pe, _, pooled, _ = pipe.encode_prompt(
            b["caption"], None, None, do_classifier_free_guidance=False, max_sequence_length=16
        )
        npe, _, npooled, _ = pipe.encode_prompt(
            [""], None, None, do_classifier_free_guidance=False, max_sequence_length=16
        )
        pe, pooled = torch.where(drop, npe, pe), torch.where(drop[:, :, 0], npooled, pooled)
        sched = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
        timesteps = sched.timesteps[(d["u"] * 1000).long()]
        idx = [(sched.timesteps == t).nonzero().item() for t in timesteps]  # the SD3 script's get_sigmas lookup
        sigmas = sched.sigmas[idx].view(-1, 1, 1, 1)
        x_t = (1 - sigmas) * x0 + sigmas * d["noise"]
        pred = net(hidden_states=x_t, timestep=timesteps, encoder_hidden_states=pe, pooled_projections=pooled).sample
        pred = pred * (-sigmas) + x_t  # precondition_outputs
        w = compute_loss_weighting_for_sd3("logit_normal", sigmas)
        return (w * (pred - x0) ** 2).reshape(2, -1).mean(1).mean(), net
    sched = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    x_t = sched.add_noise(x0, d["noise"], d["t"])
    target = d["noise"] if sched.config.prediction_type == "epsilon" else sched.get_velocity(x0, d["noise"], d["t"])
    if name in ("sd", "sd_v"):
        pe, _ = clip_states(pipe.tokenizer, pipe.text_encoder, b["caption"], None)
        npe, _ = clip_states(pipe.tokenizer, pipe.text_encoder, [""], None)
        pred = net(x_t, d["t"], encoder_hidden_states=torch.where(drop, npe, pe)).sample
    elif name == "sdxl":
        h1, _ = clip_states(pipe.tokenizer, pipe.text_encoder, b["caption"], -2)
        h2, out2 = clip_states(pipe.tokenizer_2, pipe.text_encoder_2, b["caption"], -2)
        pe, pooled = torch.cat([h1, h2], -1), out2.text_embeds
        pe, pooled = torch.where(drop, 0, pe), torch.where(drop[:, :, 0], 0, pooled)  # SDXL's zeros for ""
        time_ids = torch.cat([b["original_size"], b["crop_top_left"], torch.tensor([[32, 32]] * 2)], 1).float()
        added = {"text_embeds": pooled, "time_ids": time_ids}
        pred = net(x_t, d["t"], encoder_hidden_states=pe, added_cond_kwargs=added).sample
    else:  # pixart: T5 condition with its mask, loss on the eps half of the 8 output channels
        pe, mask, _, _ = pipe.encode_prompt(b["caption"], False, max_sequence_length=16)
        npe, nmask, _, _ = pipe.encode_prompt([""], False, max_sequence_length=16)
        pe, mask = torch.where(drop, npe, pe), torch.where(drop[:, :, 0], nmask, mask)
        added = {"resolution": None, "aspect_ratio": None}
        pred = net(x_t, encoder_hidden_states=pe, encoder_attention_mask=mask, timestep=d["t"], added_cond_kwargs=added)
        pred = pred.sample.chunk(2, dim=1)[0]
    return F.mse_loss(pred, target), net


@pytest.mark.parametrize("name", list(SAVERS))
def test_one_step_matches_a_hand_written_diffusers_step(folders, name):
    module = T2IFineTune(folders[name], caption_dropout=0.5, max_sequence_length=16, export_on_fit_end=False)
    module.train()
    b = batch()
    d = draws(module, 2, name == "sd3")
    loss = module.diffusion_loss(b, draws=d)
    loss.backward()
    ref, ref_net = reference_loss(name, folders[name], b, d)
    ref.backward()
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-6), (loss.item(), ref.item())
    grads = dict(ref_net.named_parameters())
    checked = 0
    for k, p in module.net.named_parameters():
        if grads[k].grad is None:
            assert p.grad is None or not p.grad.any(), k
            continue
        assert torch.allclose(p.grad, grads[k].grad, rtol=1e-4, atol=1e-6), k
        checked += 1
    assert checked > 10


def test_lora_step_trains_only_the_adapter(folders, tmp_path):
    module = T2IFineTune(folders["sdxl"], lora=T2ILoRA(rank=2, text_encoders=True), lr=1e-2, export_on_fit_end=False)
    before = {k: v.clone() for k, v in module.state_dict().items() if not k.startswith("ema.")}
    with warnings.catch_warnings(record=True) as seen:
        trainer(tmp_path, 2, enable_checkpointing=False).fit(module, CaptionedDM())
    assert not [w for w in seen if "in eval mode" in str(w.message)]  # the denoiser trains; frozen parts are known
    after = module.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any(k.startswith("net.") for k in changed) and any(k.startswith("text_encoder_2.") for k in changed)
    trained = {id(p) for g in module.trainer.optimizers[0].param_groups for p in g["params"]}
    names = {n for n, p in module.named_parameters() if id(p) in trained}
    assert names and all("lora_" in n for n in names)


@pytest.mark.parametrize("name,lora", [("sd", None), ("sd3", T2ILoRA(rank=2))])
def test_resume_matches_an_uninterrupted_run(folders, tmp_path, name, lora):
    def module():
        return T2IFineTune(
            folders[name], lora=lora, lr=1e-3, ema_decay=0.9, max_sequence_length=16, export_on_fit_end=False
        )

    # 2 batches an epoch, checkpoint at step 2: this in-test datamodule restarts its epoch on resume (the package's
    # datamodules resume mid-epoch; tests/test_training.py checks that)
    full = module()
    trainer(tmp_path / "a", 4, enable_checkpointing=False).fit(full, CaptionedDM(n=4))
    part = module()
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "b"), every_n_train_steps=2, save_last=True)
    with pytest.raises(RuntimeError, match="simulated kill"):
        trainer(tmp_path / "b", 4, callbacks=[ckpt, Kill(3)]).fit(part, CaptionedDM(n=4))
    torch.manual_seed(123)  # a resumed run must not depend on the global RNG
    resumed = module()
    t = trainer(tmp_path / "b", 4, callbacks=[ModelCheckpoint(dirpath=str(tmp_path / "b"), save_last=True)])
    t.fit(resumed, CaptionedDM(n=4), ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert resumed.global_step == full.global_step == 4
    a, r = full.state_dict(), resumed.state_dict()
    keys = [k for k in a if k.startswith(("net.", "ema."))]
    assert any("ema.module" in k for k in keys)
    for k in keys:
        assert torch.allclose(a[k], r[k], atol=1e-6), k
    assert not torch.equal(
        a["ema.module.net." + next(n for n, p in full.net.named_parameters() if p.requires_grad)],
        module().state_dict()["net." + next(n for n, p in full.net.named_parameters() if p.requires_grad)],
    )


def test_cache_is_never_half_written_and_trains_like_pixels(folders, tmp_path):
    module = T2IFineTune(folders["sdxl"], caption_dropout=0.5, export_on_fit_end=False)
    folder = tmp_path / "cache"
    calls = []

    def encode(batch):
        calls.append(len(batch["caption"]))
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")  # killed while encoding the second chunk
        return module.encode_items(batch)

    with pytest.raises(KeyboardInterrupt):
        build_t2i_cache(folder, Captioned(4), encode, chunk_size=2)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "chunk-000000.safetensors",
        "meta.json",
    ]
    (folder / ".chunk-000001.safetensors.x.tmp").write_bytes(b"half")  # what a writer killed mid-write leaves
    assert build_t2i_cache(folder, Captioned(4), module.encode_items, chunk_size=2)
    assert calls == [2, 2]  # the finished chunk was not encoded again
    assert not list(folder.glob(".*.tmp"))
    rows = CachedT2IDataset(folder)
    assert [int(rows[i]["index"]) for i in range(4)] == [0, 1, 2, 3]
    # a cached step equals a pixel step: same latent distribution, same caption condition, same loss
    module.train()
    cb = torch.utils.data.default_collate([rows[0], rows[1]])
    d = draws(module, 2, False)
    assert torch.allclose(module.diffusion_loss(cb, draws=d), module.diffusion_loss(batch(), draws=d), atol=1e-5)


def test_fit_from_cache_builds_it_once(folders, tmp_path):
    module = T2IFineTune(folders["pixart"], max_sequence_length=16, export_on_fit_end=False)
    dm = CaptionedDM(t2i_cache=str(tmp_path / "c"))
    trainer(tmp_path, 2, enable_checkpointing=False).fit(module, dm)
    assert dm.built == 1 and module.global_step == 2
    assert len(list((tmp_path / "c").iterdir())) == 1  # one folder keyed by data, model and encoders


@pytest.mark.parametrize("name", ["sd", "sdxl", "sd3"])
def test_exported_lora_loads_with_load_lora_weights(folders, tmp_path, name):
    module = T2IFineTune(
        folders[name],
        lora=T2ILoRA(rank=2, text_encoders=True),
        lr=1e-2,
        max_sequence_length=16,
        export_on_fit_end=False,
    )
    trainer(tmp_path, 1, enable_checkpointing=False).fit(module, CaptionedDM())
    out = module.export(str(tmp_path / "lora"))
    assert os.listdir(out) == ["pytorch_lora_weights.safetensors"]
    pipe = DiffusionPipeline.from_pretrained(folders[name])
    pipe.load_lora_weights(out)
    net = pipe.unet if name != "sd3" else pipe.transformer
    module.eval()
    x, t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([10, 500])
    cond = module.conditions(batch(), torch.tensor([False, False]), (32, 32))
    with torch.no_grad():
        loaded = predict(module.family, net, x, t, cond, (32, 32))
        ema = predict(module.family, module.ema.module["net"], x, t, cond, (32, 32))
        base = predict(
            module.family,
            DiffusionPipeline.from_pretrained(folders[name]).components[module.family.net],
            x,
            t,
            cond,
            (32, 32),
        )
    assert torch.allclose(loaded, ema, atol=1e-5) and not torch.allclose(loaded, base, atol=1e-5)
    assert any("lora" in k for k in pipe.text_encoder.state_dict())


def test_exported_full_model_loads_with_from_pretrained(folders, tmp_path):
    module = T2IFineTune(folders["sd"], lr=1e-2, export_on_fit_end=False)
    trainer(tmp_path, 1, enable_checkpointing=False).fit(module, CaptionedDM())
    out = module.export(str(tmp_path / "full"))
    pipe = DiffusionPipeline.from_pretrained(out)
    for k, v in module.ema.module["net"].state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[k], v), k
    image = pipe("a cat", num_inference_steps=2, height=32, width=32, output_type="pt").images
    assert image.shape == (1, 3, 32, 32)


def test_priorswap_fit_runs_a_t2i_recipe(folders, tmp_path):
    from priorswap.toolkit.cli import main

    recipe = tmp_path / "t2i.yaml"
    recipe.write_text(
        f"""
trainer:
  max_steps: 2
  accelerator: cpu
  logger: false
  enable_progress_bar: false
  default_root_dir: {tmp_path / "run"}
model:
  class_path: priorswap.toolkit.training.t2i_module.T2IFineTune
  init_args:
    pretrained: {folders["sd"]}
    lora: {{rank: 2}}
    export_dir: {tmp_path / "export"}
data:
  class_path: test_t2i_training.CaptionedDM
"""
    )
    assert main(["fit", "-c", str(recipe), "--model.init_args.caption_dropout", "0.2"]) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert state["global_step"] == 2 and state["hyper_parameters"]["caption_dropout"] == 0.2
    assert all("lora_" in k or k == "ema.n_averaged" for k in state["state_dict"])  # only what trains is stored
    pipe = DiffusionPipeline.from_pretrained(folders["sd"])
    pipe.load_lora_weights(str(tmp_path / "export"))


def test_pixart_lora_exports_a_peft_adapter_folder(folders, tmp_path):
    from peft import PeftModel

    module = T2IFineTune(
        folders["pixart"], lora=T2ILoRA(rank=2), lr=1e-2, max_sequence_length=16, export_on_fit_end=False
    )
    trainer(tmp_path, 1, enable_checkpointing=False).fit(module, CaptionedDM())
    out = module.export(str(tmp_path / "lora"))
    transformer = DiffusionPipeline.from_pretrained(folders["pixart"]).transformer
    x, t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([10, 500])
    module.eval()
    cond = module.conditions(batch(), torch.tensor([False, False]), (32, 32))
    with torch.no_grad():
        base = predict(module.family, transformer, x, t, cond, (32, 32))
        loaded = predict(
            module.family, PeftModel.from_pretrained(transformer, out).base_model.model, x, t, cond, (32, 32)
        )
        ema = predict(module.family, module.ema.module["net"], x, t, cond, (32, 32))
    assert torch.allclose(loaded, ema, atol=1e-5) and not torch.allclose(loaded, base, atol=1e-5)


# -- loss options: Min-SNR-gamma, offset noise, DreamBooth prior preservation ------------------------------------
def sd_pred_target(folder, b, d, noise):
    """A hand-written SD step without caption dropout: (per-sample MSE (B,), scheduler), diffusers' parts."""
    pipe = DiffusionPipeline.from_pretrained(folder)
    dist = pipe.vae.encode(b["pixels"]).latent_dist
    x0 = (dist.mean + dist.std * d["latent_noise"]) * pipe.vae.config.scaling_factor
    sched = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    x_t = sched.add_noise(x0, noise, d["t"])
    target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(x0, noise, d["t"])
    pe, _ = clip_states(pipe.tokenizer, pipe.text_encoder, b["caption"], None)
    pred = pipe.unet(x_t, d["t"], encoder_hidden_states=pe).sample
    return F.mse_loss(pred, target, reduction="none").mean([1, 2, 3]), sched


@pytest.mark.parametrize("name", ["sd", "sd_v"])
def test_snr_gamma_is_train_text_to_image_min_snr_weighting(folders, name):
    module = T2IFineTune(folders[name], snr_gamma=5.0, caption_dropout=0.0, export_on_fit_end=False)
    b, d = batch(), draws(module, 2, False)
    d["drop"], d["t"] = torch.tensor([False, False]), torch.tensor([3, 700])  # one clipped (SNR > 5), one not
    loss = module.diffusion_loss(b, draws=d)
    mse, sched = sd_pred_target(folders[name], b, d, d["noise"])
    snr = compute_snr(sched, d["t"])
    assert snr[0] > 5 > snr[1]
    weights = torch.minimum(snr, torch.full_like(snr, 5.0)) / (snr if name == "sd" else snr + 1)
    assert torch.allclose(loss, (mse * weights).mean(), rtol=1e-5)
    assert not torch.allclose(loss, mse.mean(), rtol=1e-3)


def test_noise_offset_draws_and_adds_a_per_channel_offset(folders):
    module = T2IFineTune(folders["sd"], noise_offset=0.1, caption_dropout=0.0, export_on_fit_end=False)
    b = batch()
    d = module.draws(b, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the documented order: latent draw, dropout, timesteps, noise, offset
    latent_noise, _, t = (
        torch.randn(2, 4, 16, 16, generator=g),
        torch.rand(2, generator=g),
        torch.randint(0, 1000, (2,), generator=g),
    )
    noise, offset = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 1, 1, generator=g)
    assert torch.equal(d["noise_offset"], offset) and torch.equal(d["t"], t)
    mse, _ = sd_pred_target(folders["sd"], b, {"latent_noise": latent_noise, "t": t}, noise + 0.1 * offset)
    assert torch.allclose(module.diffusion_loss(b, draws=d), mse.mean(), rtol=1e-5)
    plain = T2IFineTune(folders["sd"], caption_dropout=0.0, export_on_fit_end=False)
    assert "noise_offset" not in plain.draws(b, torch.Generator().manual_seed(5))  # off: the draws of before


def test_prior_preservation_loss_is_instance_plus_weighted_class_loss(folders):
    module = T2IFineTune(folders["sd"], prior_loss_weight=0.5, caption_dropout=0.0, export_on_fit_end=False)
    b = batch(4)
    b["prior"] = torch.tensor([False, False, True, True])
    d = module.draws(b, torch.Generator().manual_seed(2))
    mse, _ = sd_pred_target(folders["sd"], b, d, d["noise"])
    instance, prior = mse.chunk(2)  # the two halves of one forward, as diffusers' DreamBooth scripts split it
    loss = module.diffusion_loss(b, draws=d)
    assert torch.allclose(loss, instance.mean() + 0.5 * prior.mean(), rtol=1e-5)
    assert not torch.allclose(loss, mse.mean(), rtol=1e-3)


def test_loss_options_sd3_does_not_have_are_refused_before_it_loads(folders):
    for kwargs, match in [
        ({"snr_gamma": 5.0}, "set model.weighting_scheme"),
        ({"noise_offset": 0.1}, "no noise offset"),
    ]:
        with pytest.raises(PriorswapError, match=match) as error:
            T2IFineTune(folders["sd3"], **kwargs)
        assert "\n" not in str(error.value)
