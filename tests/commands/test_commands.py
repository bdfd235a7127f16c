"""The commands are dataclasses: the parser is derived from them, mistakes answer before any heavy import, and
every output location is checked before any work."""

import dataclasses
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from priorswap.toolkit.argspec import Command, add_arguments, arg, cli_fields, from_namespace
from priorswap.toolkit.cli import OneLineParser, build_parser, main

from factories import save_dit_pipeline


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("priorswap")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- the derivation ---------------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class Toy:
    name: str = arg(help="required")
    labels: list[int] = arg(default_factory=lambda: [1, 2], help="several")
    pair: tuple[float, float] | None = arg(None, help="two")
    fast: bool = arg(False, help="a switch")
    progress: bool = arg(True, flag="--no-progress", help="off switch")
    prior: list[str] = arg(default_factory=list, flag="--prior", append=True, help="repeatable")
    shard: tuple[int, int] | None = arg(None, type=str, parse=lambda s: tuple(int(v) for v in s.split("/")), help="K/N")
    only_a: int = arg(3, kinds=("a",), help="only on a")
    kind: str = "x"  # not a flag


def parse(cls, argv, kind=None):
    p = OneLineParser(prog="toy")
    add_arguments(p, cls, kind)
    return from_namespace(cls, p.parse_args(argv), kind)


def test_fields_become_flags_with_their_types():
    t = parse(
        Toy,
        [
            "--name",
            "n",
            "--labels",
            "0",
            "3",
            "7",
            "--pair",
            "0.1",
            "0.9",
            "--fast",
            "--no-progress",
            "--prior",
            "a",
            "--prior",
            "b",
            "--shard",
            "1/4",
        ],
        kind="a",
    )
    assert t == Toy(
        name="n", labels=[0, 3, 7], pair=(0.1, 0.9), fast=True, progress=False, prior=["a", "b"], shard=(1, 4), only_a=3
    )
    d = parse(Toy, ["--name", "n"])
    assert (d.labels, d.pair, d.fast, d.progress, d.prior, d.shard) == ([1, 2], None, False, True, [], None)
    assert "only_a" not in {f.name for f in cli_fields(Toy, "b")} and "kind" not in {f.name for f in cli_fields(Toy)}


@pytest.mark.parametrize(
    "argv",
    [[], ["--name", "n", "--labels"], ["--name", "n", "--pair", "1"], ["--nam", "n"], ["--name", "n", "--labels", "x"]],
)
def test_usage_mistakes_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(Toy, argv)
    assert e.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_every_command_is_a_dataclass_and_its_flags_are_its_fields():
    """Each sub-command's parser has exactly the flags its dataclass declares (plus -h)."""
    import argparse

    def sub_action(p):
        return next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)

    seen = 0
    for group in sub_action(build_parser()).choices.values():
        inner = sub_action(group)
        for p in inner.choices.values() if inner else [group]:
            cmd = p.get_default("_command")
            if cmd is None:
                continue  # a Lightning command, parsed by LightningCLI
            assert isinstance(cmd, Command) and dataclasses.is_dataclass(cmd.spec)
            flags = {a.dest for a in p._actions if a.dest != "help"}
            assert flags == {f.name for f in cli_fields(cmd.spec, cmd.kind)}, p.prog
            seen += 1
    assert seen == 20  # sample x7, eval x6, bench x3, convert x2, demo, export


def test_protocol_flags_differ_per_kind():
    parser = build_parser()
    ip2p = parser.parse_args(["eval", "ip2p", "--model", "m", "--data", "d", "--output-dir", "o"])
    assert ip2p.image_guidance == [1.5] and ip2p.text_guidance == [7.5] and not hasattr(ip2p, "guidance_scales")
    vd = parser.parse_args(
        [
            "eval",
            "vd",
            "--model",
            "m",
            "--data",
            "d",
            "--output-dir",
            "o",
            "--guidance-scale",
            "2",
            "3",
            "--prior",
            "a=x",
            "--prior",
            "y",
            "--shard",
            "1/2",
        ]
    )
    run_ = vd._command.build(vd)
    assert (run_.kind, run_.guidance_scales, run_.priors, run_.shard) == ("vd", [2.0, 3.0], ["a=x", "y"], (1, 2))
    assert not hasattr(vd, "image_guidance") and hasattr(vd, "reference")


# -- fast answers -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "dit", "--model", "m", "--labels", "0", "--output", "x.npz", "--bogus"],
        ["sample", "dit", "--model", "m"],
        ["sample", "zero123", "--model", "m", "--image", "i", "--output-dir", "o", "--scheduler", "heun9"],
        ["eval", "zero123", "--model", "m", "--data", "d", "--output-dir", "o", "--steps", "x"],
        ["sample", "vd", "--model", "m", "--image", "/no/such.png", "--output-dir", "o", "--device", "cpu"],
        ["bench", "unet", "--modes", "vanilla"],
        ["sample", "dit", "--help"],
    ],
)
def test_mistakes_and_help_answer_before_torch_is_imported(argv, tmp_path):
    code = (
        "import sys, json\nfrom priorswap.toolkit.cli import main\n"
        f"rc = main({argv!r})\nprint(json.dumps([rc, sorted(m for m in ('torch', 'diffusers', 'lightning') if m in sys.modules)]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    rc, heavy = json.loads(res.stdout.strip().splitlines()[-1])
    assert rc == (0 if "--help" in argv else 2), res.stderr
    assert heavy == [], f"{heavy} imported before the answer"
    if rc:
        one_error_line(res.stderr)


def test_flags_are_never_prefix_matched(capsys):
    code, _, err = run(capsys, "sample", "dit", "--model", "m", "--labels", "0", "--output", "x.npz", "--guidance", "2")
    assert code == 2 and "unrecognized arguments: --guidance" in one_error_line(err)


# -- values that make no sense ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    path = save_dit_pipeline(str(tmp_path_factory.mktemp("cmd") / "dit"), num_classes=4)
    with open(os.path.join(path, "id2label.json"), "w") as f:
        json.dump({"0": "apple_pie", "1": "baklava", "2": "pizza", "3": "sushi, raw fish"}, f)
    return path


def sample_argv(dit, tmp_path, *extra):
    return [
        "sample",
        "dit",
        "--model",
        dit,
        "--labels",
        "0",
        "--steps",
        "2",
        "--no-progress",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "o.npz"),
        *extra,
    ]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--dtype", "fp16"], "--dtype fp16 is not supported on the CPU"),
        (["--guidance-scale", "-1"], "--guidance-scale must be at least 0"),
        (["--prior-mix", "1.5"], "--prior-mix must lie in [0, 1]"),
        (["--guidance-interval", "0.8", "0.2"], "not an interval"),
        (["--device", "tpu"], "unknown --device 'tpu'"),
        (["--labels", "pizzza"], "unknown class name 'pizzza'"),
        (["--labels", "4"], "label 4 is out of range"),
    ],
)
def test_values_that_cannot_be_meant_are_refused(dit, tmp_path, capsys, extra, needle):
    code, _, err = run(capsys, *sample_argv(dit, tmp_path, *extra))
    assert code == 2 and needle in one_error_line(err)
    assert not os.path.exists(tmp_path / "o.npz")


def test_scale_below_one_warns_but_runs(dit, tmp_path, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run(capsys, *sample_argv(dit, tmp_path, "--guidance-scale", "0.5"))
    assert code == 0, err
    assert any("--guidance-scale 0.5 is below 1" in str(w.message) for w in caught)


def test_labels_by_class_name_and_labelled_grid_columns(dit, tmp_path, capsys):
    from PIL import Image

    argv = sample_argv(dit, tmp_path, "--grid", str(tmp_path / "g.png"))
    argv[argv.index("--labels") + 1 : argv.index("--labels") + 2] = ["Pizza", "2", "sushi", "apple pie"]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert np.load(tmp_path / "o.npz")["labels"].tolist() == [2, 2, 3, 0]
    (tmp_path / "by_id").mkdir()
    assert run(capsys, *sample_argv(dit, tmp_path / "by_id", "--labels", "2", "2", "3", "0"))[0] == 0
    assert np.array_equal(np.load(tmp_path / "o.npz")["arr_0"], np.load(tmp_path / "by_id" / "o.npz")["arr_0"])
    import torch

    from priorswap.toolkit.images import make_grid

    grid = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    rows_only = make_grid([torch.zeros(4, 3, 8, 8)], row_labels=["vanilla"])
    assert grid.shape[0] > rows_only.shape[1]  # the class names add a top margin
    assert (grid[: grid.shape[0] - rows_only.shape[1]] < 128).any()  # with text in it


# -- output locations, checked before any work ------------------------------------------------------
@pytest.fixture
def blocker(tmp_path):
    """A regular file: any path below it cannot be created, whoever runs the tests (root ignores permissions)."""
    path = tmp_path / "a_file"
    path.write_text("x")
    return str(path)


def test_sample_outputs_are_checked_before_sampling(dit, tmp_path, capsys, blocker):
    (tmp_path / "adir").mkdir()
    cases = [
        (["--output", str(tmp_path / "adir")], "is a folder"),
        (["--output", os.path.join(blocker, "o.npz")], "cannot be written"),
        (["--grid", os.path.join(blocker, "g.png")], "--grid"),
        (["--output", str(tmp_path / "missing" / "o.npz")], "does not exist"),
        (["--output", str(tmp_path / "out") + "/"], "ends in '/'"),  # a folder name that does not exist yet
        (["--output", str(tmp_path / "o.png")], "does not end in .npz"),
        (["--grid", str(tmp_path / "g.jpg")], "does not end in .png"),
        (["--grid", str(tmp_path / "g") + "/"], "ends in '/'"),
    ]
    for extra, needle in cases:
        argv = sample_argv(dit, tmp_path, *extra)
        code, out, err = run(capsys, *argv)
        assert code == 2 and needle in one_error_line(err), (extra, err)
        assert "wrote" not in out and not os.path.exists(tmp_path / "o.npz")  # nothing sampled, nothing written


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["sample", "vd", "--model", "m", "--image", "IMG", "--output-dir", "BLOCKED"], "--output-dir"),
        (["eval", "zero123", "--model", "m", "--data", "d", "--output-dir", "BLOCKED"], "--output-dir"),
        (
            [
                "eval",
                "dit",
                "--model",
                "m",
                "--prior",
                "p",
                "--data",
                "food101",
                "--data-root",
                "ROOT",
                "--output-dir",
                "BLOCKED",
            ],
            "--output-dir",
        ),
        (["demo", "--out", "BLOCKED"], "--out"),
        (["export", "--ckpt", "IMG", "--out", "BLOCKED"], "--out"),
    ],
)
def test_unwritable_output_folders_are_one_line(tmp_path, capsys, blocker, argv, flag):
    img = tmp_path / "i.png"
    img.write_bytes(b"not read before the output check")
    subs = {"BLOCKED": os.path.join(blocker, "out"), "IMG": str(img), "ROOT": str(tmp_path)}
    device = ["--device", "cpu"] if argv[0] in ("sample", "eval") else []
    code, _, err = run(capsys, *[subs.get(a, a) for a in argv], *device)
    assert code == 2
    assert f"{flag} " in one_error_line(err) and "is a file" in err


# -- offline feature networks ------------------------------------------------------------------------
def test_fmnist_is_a_built_in_extractor():
    import torch

    from priorswap.toolkit.metrics import build_extractor
    from priorswap.toolkit.metrics.factory import metric_name

    ext = build_extractor("fmnist")
    assert ext.features(torch.rand(2, 3, 16, 16)).shape == (2, 128) and metric_name("fmnist") == "fd_fmnist"


def test_missing_inception_weights_name_the_flag_and_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch hub cache
    from priorswap.toolkit.errors import PriorswapError
    from priorswap.toolkit.metrics import build_extractor

    with pytest.raises(PriorswapError) as e:
        build_extractor("inception", None, allow_download=False, weights_flag="as --extractor-weights FILE")
    msg = str(e.value)
    assert "--extractor-weights FILE" in msg and "weights-inception-2015-12-05-6726825d.pth" in msg
    assert "torch-fidelity" in msg and "None" not in msg


# -- import names -----------------------------------------------------------------------------------
def test_a_project_with_its_own_data_and_callbacks_modules(tmp_path):
    """From a folder holding its own data/ package and callbacks.py (both on sys.path), priorswap's modules and
    the fit command still resolve to priorswap's."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "__init__.py").write_text("raise ImportError('the user project data package was imported')\n")
    (tmp_path / "callbacks.py").write_text("raise ImportError('the user project callbacks.py was imported')\n")
    (tmp_path / "toolkit").mkdir()
    (tmp_path / "toolkit" / "__init__.py").write_text("raise ImportError('the user project toolkit was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = (
        "import priorswap.data, priorswap.callbacks, priorswap.toolkit.cli\n"
        "from priorswap.data import Food101DataModule\nfrom priorswap.callbacks import PriorSwapEval\nprint('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "priorswap.toolkit", "fit", "-c", "tiny_food101.yaml", "--print_config"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "priorswap.callbacks.PriorSwapEval" in res.stdout and "user project" not in res.stderr


# -- benchmarks --------------------------------------------------------------------------------------
def bench_plan(*flags):
    """The checked settings of `bench sample`, and how many guided predictions it times."""
    ns = build_parser().parse_args(["bench", "sample", "--device", "cpu", *flags])
    spec = ns._command.build(ns)
    spec.check()
    return spec, len(spec.batch_sizes) * len(spec.modes) * spec.repeats


def test_bench_sample_defaults_to_the_readme_table_and_full_is_a_flag():
    """With no flags, `bench sample` times what the README's first table shows (a few minutes on a CPU); the
    75-prediction matrix, which did not finish in 25 minutes on a busy 2-core machine, is behind --full."""
    spec, n = bench_plan()
    assert spec.modes == ["vanilla", "swapped"] and spec.batch_sizes == [1, 8, 32] and spec.repeats == 3 and n == 18
    spec, n = bench_plan("--full")
    assert set(spec.modes) == {"vanilla", "swapped", "bf16-prior", "lora-vanilla", "lora-free"} and n == 75
    spec, n = bench_plan("--full", "--repeats", "2", "--modes", "lora-free")  # explicit flags still win
    assert spec.modes == ["lora-free", "lora-vanilla"] and n == 12
