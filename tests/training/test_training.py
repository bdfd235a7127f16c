"""Fine-tuning DiT with Lightning on fabricated Food101 / SUN397 / Caltech101 folders (tiny models, CPU)."""

import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from priorswap.data import Caltech101DataModule, Food101DataModule, SUN397DataModule
from priorswap.toolkit.cli import main
from priorswap.toolkit.dit.denoiser import label_embedders
from priorswap.toolkit.dit.load import load_dit
from priorswap.toolkit.training.label_table import drop_labels
from priorswap.toolkit.training.module import DiTFineTune

from factories import save_dit_pipeline
from fakedata import make_caltech101, make_food101, make_sun397
from repo_paths import RECIPES
from trainers import Kill, tiny_module, trainer

RECIPE = os.path.join(RECIPES, "tiny_food101.yaml")


@pytest.fixture(scope="module")
def food(tmp_path_factory):
    return make_food101(str(tmp_path_factory.mktemp("food")), classes=3, per_class=8)


@pytest.mark.parametrize(
    "make,cls",
    [(make_food101, Food101DataModule), (make_sun397, SUN397DataModule), (make_caltech101, Caltech101DataModule)],
)
def test_tiny_fit_on_each_dataset_layout(tmp_path, make, cls):
    root = make(str(tmp_path / "d"), classes=3, per_class=6)
    dm = cls(root=root, resolution=16, batch_size=4, num_workers=0)
    model = tiny_module(num_classes=dm.num_classes, class_names=dm.class_names)
    before = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    trainer(tmp_path, 3).fit(model, dm)
    assert model.num_classes == 3 and model.class_names == dm.class_names
    assert model.global_step == 3
    changed = [
        k
        for k, v in model.transformer.state_dict().items()
        if k in before and v.shape == before[k].shape and not torch.equal(v, before[k])
    ]
    assert changed  # the optimiser really stepped
    assert all(torch.isfinite(v).all() for v in model.ema.module.state_dict().values())


def test_fine_tune_replaces_label_table_in_every_block(tmp_path, food):
    base = save_dit_pipeline(str(tmp_path / "base"), num_classes=1000, sample_size=4)
    base_tables = [
        e.embedding_table.weight.detach().clone() for e in label_embedders(load_dit(base).denoiser.transformer)
    ]
    dm = Food101DataModule(root=food, resolution=32, batch_size=4, num_workers=0)
    model = DiTFineTune(
        pretrained=base,
        vae=base,
        num_classes=dm.num_classes,
        class_names=dm.class_names,
        ema_decay=0.9,
        export_dir=str(tmp_path / "export"),
    )
    trainer(tmp_path, 2).fit(model, dm)
    tables = label_embedders(model.ema.module)
    assert len(tables) == len(base_tables) > 1
    for emb in label_embedders(model.transformer):
        assert emb.embedding_table.num_embeddings == 4 and emb.num_classes == 3 and emb.dropout_prob == 0.0
    fresh = DiTFineTune(pretrained=base, vae=None)
    fresh.num_classes = None
    from priorswap.toolkit.training.label_table import replace_label_table

    replace_label_table(fresh.transformer, 3)
    for emb, old in zip(label_embedders(fresh.transformer), base_tables):
        assert torch.equal(emb.embedding_table.weight[3], old[1000])  # the null row starts as the base's
    # the exported pipeline loads in our sampler and in diffusers
    export = str(tmp_path / "export")
    loaded = load_dit(export)
    assert loaded.denoiser.num_classes == 3 and loaded.denoiser.null_id == 3
    assert loaded.id2label == dict(enumerate(dm.class_names))
    from diffusers import DiTPipeline

    assert DiTPipeline.from_pretrained(export).transformer.config.num_embeds_ada_norm == 3


def test_cfg_dropout_rate_and_same_labels_in_every_block(tmp_path):
    labels = torch.randint(0, 5, (20000,))
    dropped = drop_labels(labels, 5, 0.1, torch.Generator().manual_seed(0))
    frac = (dropped == 5).float().mean().item()
    assert abs(frac - 0.1) < 0.01
    assert torch.equal(dropped[dropped != 5], labels[dropped != 5])

    model = tiny_module(num_classes=5, cfg_dropout=0.5)
    model.configure_model()
    seen = []
    hooks = [
        e.register_forward_hook(lambda m, i, o: seen.append(i[0].clone())) for e in label_embedders(model.transformer)
    ]
    batch = {"pixels": torch.rand(64, 3, 16, 16) * 2 - 1, "label": torch.randint(0, 5, (64,))}
    model.train()
    terms = model.diffusion_loss(batch)
    for h in hooks:
        h.remove()
    assert len(seen) >= len(label_embedders(model.transformer)) >= 2  # + the final layer's conditioning
    assert all(torch.equal(s, seen[0]) for s in seen)  # one mask per sample, shared by all blocks
    assert 0.2 < terms["null_fraction"].item() < 0.8
    assert torch.isfinite(terms["vlb"]) and terms["loss"] > terms["mse"]


def test_resume_mid_epoch_matches_uninterrupted_run(tmp_path, food):
    def dm():
        return Food101DataModule(root=food, resolution=16, batch_size=8, num_workers=0)  # 3 batches per epoch

    L.seed_everything(0)
    full = tiny_module()
    trainer(tmp_path / "a", 7).fit(full, dm())

    L.seed_everything(0)
    part = tiny_module()
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "b"), every_n_train_steps=2, save_last=True)
    with pytest.raises(RuntimeError, match="simulated kill"):
        trainer(tmp_path / "b", 7, callbacks=[ckpt, Kill(5)]).fit(part, dm())
    L.seed_everything(123)  # a resumed run must not depend on the global RNG
    resumed = tiny_module()
    t = trainer(tmp_path / "b", 7, callbacks=[ModelCheckpoint(dirpath=str(tmp_path / "b"), save_last=True)])
    t.fit(resumed, dm(), ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert resumed.global_step == full.global_step == 7
    for (k, a), b in zip(full.transformer.state_dict().items(), resumed.transformer.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    for a, b in zip(full.ema.module.state_dict().values(), resumed.ema.module.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    sa, sb = full.optimizers().optimizer.state_dict(), t.optimizers[0].state_dict()
    assert sa["state"][0]["step"] == sb["state"][0]["step"]
    assert torch.allclose(sa["state"][0]["exp_avg"], sb["state"][0]["exp_avg"], atol=1e-6)


def test_cli_fit_twice_in_same_log_dir_and_resume_last(tmp_path, food):
    common = [
        "-c",
        RECIPE,
        "--data.root",
        food,
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "runs"),
        "--trainer.limit_val_batches",
        "1",
        "--trainer.val_check_interval",
        "2",
        "--trainer.enable_progress_bar",
        "false",
    ]
    assert main(["fit", *common, "--trainer.max_steps", "2"]) == 0
    run = tmp_path / "runs" / "tiny_food101" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").exists() and (run / "export" / "model_index.json").exists()
    assert main(["fit", *common, "--trainer.max_steps", "4", "--ckpt_path", "last"]) == 0
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert state["global_step"] == 4  # continued from step 2, not restarted
    assert not (run.parent / "version_1").exists()  # resumed in the same run folder


def test_cli_bad_root_is_one_line_error(tmp_path, capsys):
    code = main(["fit", "-c", RECIPE, "--data.root", str(tmp_path / "missing"), "--trainer.logger", "false"])
    err = capsys.readouterr().err
    assert code == 2
    line = [l for l in err.splitlines() if l.startswith("priorswap: error")]
    assert len(line) == 1 and "food-101" in line[0]


def test_corrupt_images_do_not_stop_training(tmp_path):
    root = make_food101(str(tmp_path / "food"), classes=2, per_class=4, corrupt=2)
    dm = Food101DataModule(root=root, resolution=16, batch_size=4, num_workers=0)
    model = tiny_module(num_classes=2)
    trainer(tmp_path, 3).fit(model, dm)
    assert model.global_step == 3
    assert dm.skipped_total >= 1 or dm.pop_skipped()


def test_ddp_two_processes(tmp_path, food):
    dm = Food101DataModule(root=food, resolution=16, batch_size=4, num_workers=0)
    model = tiny_module(export_on_fit_end=True, export_dir=str(tmp_path / "export"))
    t = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
        default_root_dir=str(tmp_path),
    )
    t.fit(model, dm)
    exported = load_dit(str(tmp_path / "export"))
    assert exported.denoiser.num_classes == 3


def test_gradient_checkpointing_trains(tmp_path, food):
    dm = Food101DataModule(root=food, resolution=16, batch_size=4, num_workers=0)
    model = tiny_module(gradient_checkpointing=True)
    trainer(tmp_path, 2).fit(model, dm)
    assert model.global_step == 2 and model.transformer.gradient_checkpointing
