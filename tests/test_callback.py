"""The vanilla-vs-swapped evaluation callback: TensorBoard output, DDP == single process, bad input."""

import json
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from priorswap.callbacks import PriorSwapEval
from priorswap.data import Food101DataModule
from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.images import make_grid
from priorswap.toolkit.metrics import ModuleExtractor
from priorswap.toolkit.training.module import DiTFineTune

from factories import save_dit_pipeline
from fakedata import make_food101


def features():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()
    )
    return ModuleExtractor(net, 32, "tiny-conv")


def classifier():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 3))


@pytest.fixture(scope="module")
def setup_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cb")
    base = save_dit_pipeline(str(root / "base"), num_classes=10, sample_size=16, latent=False, in_channels=3)
    food = make_food101(str(root / "food"), classes=3, per_class=6)
    return base, food


def run(tmp, base, food, devices=1, steps=2, lr=1e-3):
    cb = PriorSwapEval(
        guidance_scales=[1.5, 3.0],
        num_samples=6,
        steps=3,
        batch_size=4,
        every_n_steps=2,
        at_fit_end=True,
        extractor=features(),
        classifier=classifier(),
        reference_samples=6,
        stats_cache=str(tmp / "stats"),
        grid_samples=3,
        output=str(tmp / "eval" / "cfg_eval.csv"),
    )
    model = DiTFineTune(pretrained=base, vae=None, num_classes=3, ema_decay=0.5, lr=lr, export_on_fit_end=False)
    dm = Food101DataModule(root=food, resolution=16, batch_size=2, num_workers=0)
    logger = TensorBoardLogger(str(tmp / "tb"), name="run", version="v")
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=logger,
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    with open(tmp / "eval" / "cfg_eval.jsonl") as f:
        rows = [json.loads(l) for l in f]
    return rows, str(tmp / "tb" / "run" / "v")


def test_single_and_ddp_give_the_same_metrics_and_tensorboard(tmp_path, setup_dirs):
    base, food = setup_dirs
    rows, tb = run(tmp_path / "one", base, food)
    assert [r["step"] for r in rows] == [2]  # every_n_steps=2 and fit end at the same step: one evaluation
    row = rows[0]
    for scale in ("g1.5", "g3"):
        for metric in ("fd", "acc"):
            v, s, d = row[f"{metric}_vanilla_{scale}"], row[f"{metric}_swapped_{scale}"], row[f"{metric}_delta_{scale}"]
            assert abs((s - v) - d) < 1e-9
        assert row[f"fd_vanilla_{scale}"] >= 0
        assert row[f"fd_vanilla_{scale}"] != row[f"fd_swapped_{scale}"]  # another base really changes the samples
    ea = EventAccumulator(tb, size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    scalars = ea.Tags()["scalars"]
    assert (
        "cfg_eval/fd_vanilla_g1.5" in scalars
        and "cfg_eval/fd_swapped_g1.5" in scalars
        and "cfg_eval/fd_delta_g3" in scalars
    )
    assert abs(ea.Scalars("cfg_eval/fd_swapped_g3")[-1].value - row["fd_swapped_g3"]) < 1e-3
    images = ea.Tags()["images"]
    assert len(images) == 2 and all("vanilla" in t and "swapped" in t for t in images)
    img = ea.Images(images[0])[-1]
    # 3 seeds side by side, vanilla row over swapped row, labelled, 16 px tiles enlarged to 96 px
    expected = make_grid([torch.zeros(3, 3, 16, 16)] * 2, row_labels=["vanilla", "swapped"])
    assert (img.height, img.width) == tuple(expected.shape[1:]) and img.height == 2 + 2 * (96 + 2)

    # DDP trains on a larger global batch, so compare evaluations of identical weights (lr = 0)
    one, _ = run(tmp_path / "one-frozen", base, food, lr=0.0)
    ddp_rows, _ = run(tmp_path / "two", base, food, devices=2, lr=0.0)
    assert ddp_rows[0]["step"] == 2
    for key, value in one[0].items():
        if key.startswith(("fd_", "acc_")):
            assert ddp_rows[0][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_missing_extractor_weights_fail_before_training(tmp_path):
    with pytest.raises(PriorswapError) as err:
        PriorSwapEval(extractor="inception", extractor_weights=str(tmp_path / "nope.pth"))
    assert "\n" not in str(err.value) and "nope.pth" in str(err.value)
    with pytest.raises(PriorswapError, match="unknown"):
        PriorSwapEval(extractor="vgg-fancy")


def test_random_init_fine_tune_needs_an_explicit_prior(tmp_path, setup_dirs):
    _, food = setup_dirs
    cb = PriorSwapEval(extractor=features(), num_samples=2, steps=2)
    model = DiTFineTune(pretrained=None, vae=None, size="tiny", in_channels=3, sample_size=16)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        callbacks=[cb],
        enable_progress_bar=False,
        use_distributed_sampler=False,
    )
    with pytest.raises(PriorswapError, match="no prior"):
        trainer.fit(model, Food101DataModule(root=food, resolution=16, batch_size=2, num_workers=0))
    assert model.global_step == 0  # refused before any training step


def test_eval_command_prints_and_writes_table(tmp_path, setup_dirs, capsys):
    from priorswap.toolkit.cli import main

    base, food = setup_dirs
    ft = save_dit_pipeline(str(tmp_path / "ft"), num_classes=3, sample_size=16, latent=False, in_channels=3, seed=2)
    net = torch.jit.script(features().module)
    net.save(str(tmp_path / "feat.pt"))
    code = main(
        [
            "eval",
            "--model",
            ft,
            "--prior",
            base,
            "--data",
            "food101",
            "--data-root",
            food,
            "--num-samples",
            "4",
            "--guidance-scale",
            "1.5",
            "3",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--extractor",
            str(tmp_path / "feat.pt"),
            "--stats-cache",
            str(tmp_path / "stats"),
            "--output-dir",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "| fd @ 1.5 |" in out and "| fd @ 3 |" in out
    with open(tmp_path / "out" / "eval.csv") as f:
        rows = f.read().strip().splitlines()
    assert rows[0] == "metric,scale,vanilla,swapped,swapped_minus_vanilla" and len(rows) == 3
    assert (
        main(
            [
                "eval",
                "--model",
                ft,
                "--prior",
                base,
                "--data",
                "food101",
                "--data-root",
                food,
                "--extractor",
                "nope",
                "--output-dir",
                str(tmp_path / "o2"),
            ]
        )
        == 2
    )


def test_eval_dit_with_the_built_in_fmnist_networks_works_offline(tmp_path, setup_dirs, capsys):
    """``--extractor fmnist --classifier fmnist``: the shipped Fashion-MNIST classifier as feature network and as
    label classifier, no weights file needed."""
    from priorswap.toolkit.cli import main

    base, food = setup_dirs
    ft = save_dit_pipeline(str(tmp_path / "ft"), num_classes=3, sample_size=16, latent=False, in_channels=3, seed=2)
    code = main(
        [
            "eval",
            "dit",
            "--model",
            ft,
            "--prior",
            base,
            "--data",
            "food101",
            "--data-root",
            food,
            "--num-samples",
            "4",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--extractor",
            "fmnist",
            "--classifier",
            "fmnist",
            "--device",
            "cpu",
            "--stats-cache",
            str(tmp_path / "stats"),
            "--output-dir",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "| fd_fmnist @ 1.5 |" in out and "| acc @ 1.5 |" in out


def test_eval_dit_runs_take_the_minimum_fd_over_disjoint_seeds(tmp_path, setup_dirs, capsys):
    import csv

    from priorswap.toolkit.cli import main

    base, food = setup_dirs
    ft = save_dit_pipeline(str(tmp_path / "ft"), num_classes=3, sample_size=16, latent=False, in_channels=3, seed=2)
    net = torch.jit.script(features().module)
    net.save(str(tmp_path / "feat.pt"))
    code = main(
        [
            "eval",
            "dit",
            "--model",
            ft,
            "--prior",
            base,
            "--data",
            "food101",
            "--data-root",
            food,
            "--num-samples",
            "4",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--extractor",
            str(tmp_path / "feat.pt"),
            "--runs",
            "2",
            "--seed",
            "5",
            "--stats-cache",
            str(tmp_path / "stats"),
            "--output-dir",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert code == 0 and "2 runs (fd: minimum, others: mean)" in capsys.readouterr().out
    with open(tmp_path / "out" / "eval_runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert sorted({(r["run"], r["seed"]) for r in runs}) == [("0", "5"), ("1", "9")]  # disjoint: seeds 5-8 and 9-12
    per_run = [float(r["value"]) for r in runs if r["key"] == "fd_vanilla_g1.5"]
    assert len(per_run) == 2 and per_run[0] != per_run[1]
    with open(tmp_path / "out" / "eval.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["metric"] == "fd")
    assert float(row["vanilla"]) == pytest.approx(min(per_run))


def test_table_keeps_metric_names_with_underscores_and_combines_runs():
    from priorswap.toolkit.evaluation import combine_runs, format_table

    runs = [
        {"fd_dinov2_vanilla_g2": 5.0, "fd_dinov2_swapped_g2": 4.0, "acc_vanilla_g2": 0.5, "acc_swapped_g2": 0.7},
        {"fd_dinov2_vanilla_g2": 3.0, "fd_dinov2_swapped_g2": 6.0, "acc_vanilla_g2": 0.7, "acc_swapped_g2": 0.9},
    ]
    both = combine_runs(runs, "fd_dinov2")
    assert (
        both["fd_dinov2_vanilla_g2"] == 3.0
        and both["fd_dinov2_swapped_g2"] == 4.0
        and both["fd_dinov2_delta_g2"] == 1.0
    )
    assert both["acc_vanilla_g2"] == pytest.approx(0.6) and both["acc_delta_g2"] == pytest.approx(0.2)
    rows = format_table(both, [2.0])
    assert [r[0] for r in rows] == ["acc @ 2", "fd_dinov2 @ 2"]


def test_an_error_during_evaluation_is_raised_not_swallowed(tmp_path, setup_dirs):
    base, food = setup_dirs

    class Broken(ModuleExtractor):
        def features(self, images):
            raise RuntimeError("extractor exploded")

    cb = PriorSwapEval(
        extractor=Broken(torch.nn.Identity(), 4, "broken"),
        num_samples=2,
        steps=2,
        every_n_steps=1,
        at_fit_end=False,
        stats_cache=None,
        grid_samples=0,
        output=str(tmp_path / "e.csv"),
    )
    model = DiTFineTune(pretrained=base, vae=None, num_classes=3, export_on_fit_end=False)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        callbacks=[cb],
        enable_progress_bar=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
    )
    with pytest.raises(RuntimeError, match="extractor exploded"):
        trainer.fit(model, Food101DataModule(root=food, resolution=16, batch_size=2, num_workers=0))
    assert not os.path.exists(tmp_path / "e.csv")  # no row written for a failed evaluation
