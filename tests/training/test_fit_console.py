"""What `priorswap fit` prints: one line for a misspelled key, readable progress in a log file, useful --help."""

import inspect
import io
import os
import re
import subprocess
import sys
import textwrap

import pytest

from priorswap.toolkit.cli import main
from priorswap.toolkit.training.module import DiTFineTune

from fakedata import make_food101
from repo_paths import REPO

TINY = os.path.join(REPO, "recipes", "tiny_food101.yaml")


def recipe_with(tmp_path, name: str, old: str, new: str) -> str:
    """The tiny recipe with one line changed (the mistake under test), written next to the test's data."""
    text = open(TINY).read()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return str(path)


def refused(capsys, argv: list[str]) -> str:
    """The single stderr line of a fit refused as a usage mistake (exit 2)."""
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_misspelled_section_key_in_a_recipe_is_one_line(tmp_path, capsys):
    recipe = recipe_with(tmp_path, "mine.yaml", "  max_steps: 20\n", "  max_step: 20\n")
    line = refused(capsys, ["fit", "-c", recipe, "--data.root", str(tmp_path)])
    assert line.startswith("priorswap: error: unknown key 'max_step'")
    assert f"in {recipe} at trainer.max_step;" in line and "did you mean 'max_steps'?" in line


def test_misspelled_callback_argument_in_an_included_recipe_names_that_file(tmp_path, capsys):
    base = recipe_with(tmp_path, "base.yaml", "every_n_steps: 10\n", "every_n_step: 10\n")
    top = tmp_path / "top.yaml"
    top.write_text("config: base.yaml\ntrainer.max_steps: 3\n")  # the shape of the paper's dataset recipes
    line = refused(capsys, ["fit", "-c", str(top), "--data.root", str(tmp_path)])
    assert "unknown key 'every_n_step' of priorswap.callbacks.PriorSwapEval" in line
    assert f"in {base} at trainer.callbacks[0].init_args.every_n_step;" in line
    assert "did you mean 'every_n_steps'?" in line


def test_misspelled_nested_init_arg_names_its_own_class(tmp_path, capsys):
    extractor = "          class_path: priorswap.toolkit.metrics.fmnist.FMNISTExtractor\n"
    recipe = recipe_with(tmp_path, "mine.yaml", extractor, extractor + "          init_args: {wieghts: x.pt}\n")
    line = refused(capsys, ["fit", "-c", recipe, "--data.root", str(tmp_path)])
    assert "unknown key 'wieghts' of priorswap.toolkit.metrics.fmnist.FMNISTExtractor" in line
    assert "at trainer.callbacks[0].init_args.extractor.init_args.wieghts;" in line
    assert "did you mean 'weights'?" in line


def test_misspelled_datamodule_argument_on_the_command_line(tmp_path, capsys):
    line = refused(capsys, ["fit", "-c", TINY, "--data.init_args.rooot", str(tmp_path)])
    assert "unknown key 'rooot' of priorswap.data.Food101DataModule" in line
    assert "on the command line (--data.init_args.rooot)" in line and "did you mean 'root'?" in line


def test_misspelled_flag_suggests_the_spelled_out_one(tmp_path, capsys):
    line = refused(capsys, ["fit", "-c", TINY, "--model.pretraind", "x"])
    assert "--model.pretraind" in line and line.endswith("did you mean --model.pretrained?")


def test_help_names_the_datamodules_the_callback_and_explains_model_arguments(capsys):
    with pytest.raises(SystemExit) as err:
        main(["fit", "--help"])
    assert err.value.code == 0
    out = capsys.readouterr().out
    for cls in ("ImageFolderDataModule", "Food101DataModule", "FashionMNISTDataModule"):
        assert f"priorswap.data.{cls}" in out
    assert "priorswap.callbacks.PriorSwapEval" in out
    blocks = dict(re.findall(r"\n  --model\.(\w+)(?: [A-Z_{},a-z]+)?\s+(.*?)(?=\n  -|\n\n)", out, flags=re.S))
    blocks.update(re.findall(r"--> model\.(\w+) \[applied on \w+\]\s+(.*?)(?=\n  \S|\n\n)", out, flags=re.S))  # linked
    args = [a for a in inspect.signature(DiTFineTune.__init__).parameters if a != "self"]
    assert sorted(blocks) == sorted(args)
    undocumented = [name for name, text in blocks.items() if text.strip().startswith("(type:")]
    assert not undocumented  # each option says what it does before its type and default


def test_fit_in_a_log_file_prints_plain_progress_lines_and_no_tips(tmp_path):
    """stdout is a pipe here, as in `nohup priorswap fit ... > log`: no carriage returns, a line per interval."""
    food = make_food101(str(tmp_path / "food"), classes=2, per_class=4)
    recipe = tmp_path / "plain.yaml"
    recipe.write_text(
        textwrap.dedent(f"""\
        trainer:
          accelerator: cpu
          max_steps: 4
          log_every_n_steps: 1
          limit_val_batches: 0
          enable_model_summary: false
          logger:
            class_path: lightning.pytorch.loggers.TensorBoardLogger
            init_args: {{save_dir: {tmp_path / "runs"}, name: plain}}
        model: {{pretrained: null, vae: null, size: tiny, in_channels: 3, sample_size: 16, export_on_fit_end: false}}
        data:
          class_path: priorswap.data.Food101DataModule
          init_args: {{root: {food}, resolution: 16, batch_size: 2, num_workers: 0}}
        """)
    )
    script = (
        "import sys; from priorswap.toolkit.training import progress; from priorswap.toolkit.cli import main\n"
        "progress.LINE_EVERY_S = 0  # a line every step, so a 4-step fit shows the periodic lines\n"
        "main(sys.argv[1:]); main(sys.argv[1:] + ['--trainer.max_steps', '6', '--ckpt_path', 'last'])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(REPO, ".pkg"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(
        [sys.executable, "-c", script, "fit", "-c", str(recipe)], capture_output=True, text=True, env=env, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "\r" not in res.stdout + res.stderr
    steps = re.findall(
        r"^step (\d+)/(\d+) \(\d+%\) \| epoch \d+ \| loss [\d.e+-]+ \| [\d.]+ (?:it/s|s/it)", res.stdout, re.M
    )
    assert steps == [(str(i), "4") for i in range(1, 5)] + [("5", "6"), ("6", "6")], res.stdout
    assert "ETA" in res.stdout and "v_num" not in res.stdout
    assert "Tip:" not in res.stdout + res.stderr
    assert "Checkpoint directory" not in res.stderr  # the resumed run's own folder holds its checkpoints


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_bar_shows_no_v_num_and_no_negative_epoch_bound_and_a_recipe_bar_is_kept(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from priorswap.toolkit.training.progress import TerminalRichProgressBar, TerminalTQDMProgressBar, readable_progress

    trainer = L.Trainer(max_steps=3, logger=TensorBoardLogger(str(tmp_path), name="t"), enable_model_summary=False)
    lightning_default = trainer.progress_bar_callback
    readable_progress(trainer, [], stream=Terminal())
    bar = trainer.progress_bar_callback
    assert bar is not lightning_default and sum(c is bar for c in trainer.callbacks) == 1
    assert isinstance(
        bar, TerminalRichProgressBar if isinstance(lightning_default, RichProgressBar) else TerminalTQDMProgressBar
    )
    bar.setup(trainer, None, "fit")
    assert "v_num" not in bar.get_metrics(trainer, None)
    if isinstance(bar, TerminalRichProgressBar):
        trainer.fit_loop.max_epochs = -1  # what fit sets when only max_steps bounds it
        assert bar._get_train_description(0).strip() == "Epoch 0"  # not "Epoch 0/-2": max_steps bounds this fit
    mine = TQDMProgressBar(refresh_rate=5)
    trainer = L.Trainer(max_steps=3, logger=False, callbacks=[mine], enable_model_summary=False)
    readable_progress(trainer, [mine], stream=io.StringIO())
    assert trainer.progress_bar_callback is mine
