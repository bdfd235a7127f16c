"""The vanilla-vs-swapped evaluation callback: TensorBoard output, DDP == single process, bad input."""

import json
import os
import warnings

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
from metric_factories import tiny_conv_features as features


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
    from priorswap.data.fashion_mnist import CLASS_NAMES
    from priorswap.toolkit.cli import main

    base, food = setup_dirs
    ft = save_dit_pipeline(str(tmp_path / "ft"), num_classes=10, sample_size=16, latent=False, in_channels=3, seed=2)
    with open(os.path.join(ft, "id2label.json"), "w") as f:  # the shipped classifier's classes, in its order
        json.dump({str(i): name for i, name in enumerate(CLASS_NAMES)}, f)
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


def eval_dit_argv(ft, base, food, out, *extra):
    return ["eval", "dit", "--model", ft, "--prior", base, "--data", "food101", "--data-root", food, "--num-samples",
            "4", "--steps", "2", "--batch-size", "4", "--device", "cpu", "--output-dir", str(out), "--no-progress",
            *extra]  # fmt: skip


@pytest.mark.parametrize(
    "names,extra,needle",
    [
        (None, [], "has 3 classes (0, 1, 2); drop --classifier"),  # not Fashion-MNIST's classes at all
        (["Sandal", "Sneaker", "Bag"], [], "so pass --classes 5 7 8"),  # Fashion-MNIST's, but --classes forgotten
        (["Sandal", "Bag", "Sneaker"], ["--classes", "5", "7", "8"], "(Sandal, Bag, Sneaker)"),  # another order
    ],
)
def test_eval_dit_refuses_a_classifier_of_other_classes_before_sampling(
    tmp_path, setup_dirs, capsys, names, extra, needle
):
    """Label accuracy compares the classifier's argmax with the class asked for: against another class map it is
    a number without meaning, so it is refused in one line before any sample is drawn."""
    from priorswap.toolkit.cli import main

    base, food = setup_dirs
    ft = save_dit_pipeline(str(tmp_path / "ft"), num_classes=3, sample_size=16, latent=False, in_channels=3, seed=2)
    if names:
        with open(os.path.join(ft, "id2label.json"), "w") as f:
            json.dump(dict(enumerate(names)), f)
    argv = eval_dit_argv(ft, base, food, tmp_path / "out", "--extractor", "fmnist", "--classifier", "fmnist", *extra)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("priorswap")]
    assert code == 2 and len(lines) == 1 and "--classifier fmnist" in lines[0] and needle in lines[0], err
    assert "reference:" not in out and not (tmp_path / "out" / "eval.md").exists()  # stopped before the reference


def test_eval_dit_refuses_a_classifier_file_with_another_class_count(tmp_path, setup_dirs, capsys):
    from priorswap.toolkit.cli import main

    base, food = setup_dirs
    ft = save_dit_pipeline(str(tmp_path / "ft"), num_classes=3, sample_size=16, latent=False, in_channels=3, seed=2)
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10)]
    ten_way = torch.jit.script(torch.nn.Sequential(*layers))
    ten_way.save(str(tmp_path / "clf.pt"))
    code = main(eval_dit_argv(ft, base, food, tmp_path / "out", "--extractor", "fmnist", "--classifier",
                              str(tmp_path / "clf.pt")))  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("priorswap")]
    assert code == 2 and len(lines) == 1 and "logits of shape (2, 10)" in lines[0] and "3 classes" in lines[0], err


def test_eval_dit_states_the_reference_count_and_warns_when_it_is_rank_deficient(tmp_path, setup_dirs, capsys):
    """6 validation images against 128-d FD-FMNIST features: the covariance has rank 5 at most. The count is printed
    and recorded, and a warning says the distance is not meaningful."""
    import csv

    from priorswap.toolkit.cli import main

    base, food = setup_dirs
    ft = save_dit_pipeline(str(tmp_path / "ft"), num_classes=3, sample_size=16, latent=False, in_channels=3, seed=2)
    stats = ["--stats-cache", str(tmp_path / "stats")]
    with pytest.warns(UserWarning, match="6 images, fewer than its 128 feature dimensions"):
        code = main(eval_dit_argv(ft, base, food, tmp_path / "out", "--extractor", "fmnist", *stats))
    out = capsys.readouterr().out
    assert code == 0
    line = "reference: 6 real images (food101 validation split), 128-d features for fd_fmnist"
    assert line in out and line in (tmp_path / "out" / "eval.md").read_text()
    assert "rank-deficient" in (tmp_path / "out" / "eval.md").read_text()
    with open(tmp_path / "out" / "eval_runs.csv") as f:
        assert [r["value"] for r in csv.DictReader(f) if r["key"] == "reference_images"] == ["6"]
    torch.manual_seed(0)
    four = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.jit.script(four).save(str(tmp_path / "feat4.pt"))
    with warnings.catch_warnings(record=True) as caught:  # 6 images against 4-d features: no warning
        warnings.simplefilter("always")
        code = main(eval_dit_argv(ft, base, food, tmp_path / "o2", "--extractor", str(tmp_path / "feat4.pt"), *stats))
    assert not [w for w in caught if "rank-deficient" in str(w.message)]
    assert code == 0 and "reference: 6 real images (food101 validation split), 4-d features" in capsys.readouterr().out


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
