"""``priorswap fit|validate|test -c recipes/X.yaml``: LightningCLI over :class:`DiTFineTune` and any datamodule.

Recipes are YAML of the typed constructor arguments; command-line flags override them. A recipe may load another
first with a ``config: other.yaml`` line (relative to itself), as the paper's dataset recipes load
``dit_xl2_base.yaml``. ``-c NAME.yaml`` or ``-c recipes/NAME.yaml`` that does not exist here is the recipe shipped
with the package (``priorswap.recipes``), so a wheel install has them too.

Run folders are Lightning's: ``<save_dir>/<name>/version_N``, a new N per run. ``--ckpt_path last`` resumes the newest
version that has a ``last.ckpt``, in that same folder; a run folder named explicitly (``version: run``) that already
holds a run is refused unless resumed. Flags must be spelled out (``--trainer.max_step`` is an error, not
``max_steps``). The model's ``num_classes`` and ``class_names`` are the datamodule's (a link applied when the
datamodule is built), not a setting: ``--print_config`` shows every setting, and the checkpoint's hyperparameters
hold the label map.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import warnings
from importlib import resources

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from ..checks import check_output_dir
from ..errors import PriorswapError
from ..launch import is_launch_rank_zero
from .config_errors import one_line_error
from .console import hide_lightning_tips, resuming_run_folder
from .help_text import subcommand_parser_kwargs
from .model_choice import names_model_class
from .module import DiTFineTune
from .progress import progress_bars, readable_progress
from .startup_checks import check_model_and_data, first_missing, new_run_folder, remove_failed_start

CONFIG_FLAGS = ("-c", "--config")
VERSIONED_LOGGERS = ("TensorBoardLogger", "CSVLogger")  # loggers that number runs <save_dir>/<name>/version_N


class SpelledOutParser(LightningArgumentParser):
    """No prefix matching (argparse would run `--trainer.max_step 3` as `max_steps`); an unknown flag or recipe key
    is one line naming where it is and the nearest valid name (:mod:`.config_errors`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        line = one_line_error(self, message, ex) if self.exit_on_error else None
        if line is not None:
            sys.stderr.write(f"priorswap: error: {line}\n")
            raise SystemExit(2)
        super().error(message, ex)


class PriorswapCLI(LightningCLI):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parser_class", SpelledOutParser)
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        with warnings.catch_warnings():
            # `priorswap fit` hands LightningCLI its own argv (with recipe names resolved) on purpose
            warnings.filterwarnings(
                "ignore", message="LightningCLI's args parameter is intended to run from within Python"
            )
            super().parse_arguments(parser, args)

    def add_arguments_to_parser(self, parser) -> None:
        if self.subclass_mode_model:  # a model named by class_path (model_choice.py): its own settings, no DiT links
            parser.link_arguments("seed_everything", "model.init_args.seed")
            return
        parser.link_arguments("seed_everything", "model.seed")
        # the label table's size and names are the datamodule's, read once it is built (it has scanned its root)
        parser.link_arguments("data", "model.num_classes", compute_fn=_data_num_classes, apply_on="instantiate")
        parser.link_arguments("data", "model.class_names", compute_fn=_data_class_names, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Checks that need no model: writable log folder, something to resume, no silent mixing of runs."""
        if self.subcommand is not None and not self.subclass_mode_model:  # packaged DiT folders; images vs its config
            check_model_and_data(self.config[self.subcommand])
        if self.subcommand != "fit":
            return
        prepare_run_folder(self.config[self.subcommand])

    def _run_subcommand(self, subcommand: str) -> None:
        folder = new_run_folder(self.trainer) if subcommand == "fit" else None
        made = first_missing(folder)
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            remove_failed_start(self.trainer, folder, made)  # only folders this fit made and never trained into
            raise

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        recipe_bars = progress_bars(self.config_init[self.subcommand]["trainer"].get("callbacks"))
        trainer = super().instantiate_trainer(**kwargs)
        readable_progress(trainer, recipe_bars)
        if self.subcommand == "fit":
            resuming_run_folder(self.config[self.subcommand].get("ckpt_path"))
        return trainer


def run_lightning_cli(argv: list[str]) -> PriorswapCLI:
    # Lightning's own pytree helper on recent torch, printed on every fit; nothing a user can act on
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module="lightning",
    )
    hide_lightning_tips()
    argv = shipped_recipes(argv)
    by_class = names_model_class(argv)  # a recipe's model class_path (a text-to-image fine-tune), else DiTFineTune
    with warnings.catch_warnings():  # filters set for this fit (a resumed folder's warning) end with it
        return PriorswapCLI(
            L.LightningModule if by_class else DiTFineTune,
            L.LightningDataModule,
            subclass_mode_model=by_class,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            args=argv,
            auto_configure_optimizers=False,
            # our datamodules shard and order data themselves (data/sampler.py), resumable mid-epoch
            trainer_defaults={"use_distributed_sampler": False},
            parser_kwargs=subcommand_parser_kwargs(),
        )


# -- recipes ----------------------------------------------------------------------------------------
def shipped_recipe(path: str) -> str | None:
    """The packaged recipe a missing ``recipes/NAME.yaml`` or ``NAME.yaml`` means, if there is one."""
    if os.path.exists(path):
        return None
    parent, name = os.path.split(os.path.normpath(path))
    if parent not in ("", "recipes") or not name.endswith((".yaml", ".yml")):
        return None
    shipped = resources.files("priorswap.recipes").joinpath(name)
    return str(shipped) if shipped.is_file() else None


def shipped_recipes(argv: list[str]) -> list[str]:
    """``argv`` with every ``-c``/``--config`` recipe that is not here replaced by the shipped one of that name."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in CONFIG_FLAGS and i + 1 < len(out):
            out[i + 1] = shipped_recipe(out[i + 1]) or out[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
            out[i] = "--config=" + (shipped_recipe(value) or value)
    return out


# -- the class count link -----------------------------------------------------------------------------
def _data_num_classes(dm) -> int | None:
    return _data_attribute(dm, "num_classes")


def _data_class_names(dm) -> list[str] | None:
    names = _data_attribute(dm, "class_names")
    return None if names is None else [str(n) for n in names]


def _data_attribute(dm, name: str):
    if getattr(dm, "download", False) and is_launch_rank_zero():
        dm.prepare_data()  # the class list is in the dataset files: fetch them before reading it
    return getattr(dm, name, None)


# -- run folders ------------------------------------------------------------------------------------
SPECIAL_CKPT = ("last", "best", "hpc", "registry")  # the names Trainer.fit(ckpt_path=...) resolves itself


def prepare_run_folder(cfg) -> None:
    """Refuse (one line) what would fail after the model loads or mix two runs; pin the version to resume.

    ``cfg`` is the fit sub-command's namespace (trainer, ckpt_path, ...). With ``--ckpt_path last`` and a numbered
    logger the newest ``version_N`` holding ``checkpoints/last*.ckpt`` is chosen here, before the logger exists,
    so Lightning finds that checkpoint and the resumed run keeps writing into the same folder.
    """
    ckpt_path = cfg.get("ckpt_path")
    if (
        ckpt_path is not None
        and str(ckpt_path) not in SPECIAL_CKPT
        and not os.path.isfile(os.path.expanduser(str(ckpt_path)))
    ):
        raise PriorswapError(
            f"--ckpt_path {ckpt_path!r} is not a file; pass a checkpoint, or `last` to resume the newest run"
        )
    run = RunLayout.of(cfg.trainer)
    check_output_dir(run.flag, run.save_dir)
    if run.kind == "numbered":
        if ckpt_path == "last":
            chosen = _resumable_newest_version(run.base)
            run.pin_version(chosen)
            _refuse_finished(os.path.join(run.base, f"version_{chosen}"), cfg.trainer.get("max_steps"))
            if is_launch_rank_zero():
                print(f"priorswap: resuming {os.path.join(run.base, f'version_{chosen}')}", flush=True)
    elif run.kind == "fixed":
        have = glob.glob(os.path.join(glob.escape(run.ckpt_dir), "*.ckpt"))
        if ckpt_path == "last":
            if not any(os.path.basename(p).startswith("last") for p in have):
                raise PriorswapError(
                    f"--ckpt_path last: nothing to resume, {run.ckpt_dir} has no last.ckpt; "
                    "start without --ckpt_path to begin a new run"
                )
        elif ckpt_path is None and is_launch_rank_zero() and (have or _has_logs(run.folder)):
            # rank 0 only: the other ranks start once rank 0 has begun writing into this folder
            raise PriorswapError(
                f"{run.folder} already holds a run; resume it with --ckpt_path last, or {run.new_hint}"
            )


class RunLayout:
    """Where a fit writes, from the trainer's config: Lightning's numbered ``<save_dir>/<name>/version_N``, a fixed
    folder (a named version, logger off, or ``ModelCheckpoint(dirpath=...)``), or a logger we do not lay out."""

    def __init__(
        self,
        kind: str,
        save_dir: str,
        flag: str,
        base: str = "",
        folder: str = "",
        ckpt_dir: str = "",
        new_hint: str = "",
        pin=None,
    ):
        self.kind, self.save_dir, self.flag, self.base = kind, os.path.expanduser(str(save_dir)), flag, base
        self.folder, self.ckpt_dir, self.new_hint, self._pin = folder, ckpt_dir, new_hint, pin

    def pin_version(self, version: int) -> None:
        self._pin(version)

    @classmethod
    def of(cls, trainer) -> "RunLayout":
        root = os.path.expanduser(str(trainer.get("default_root_dir") or os.getcwd()))
        root_flag = "--trainer.default_root_dir"
        dirpath = next(
            (
                c.init_args.dirpath
                for c in (trainer.get("callbacks") or [])
                if _class_name(c) == "ModelCheckpoint" and c.get("init_args") is not None and c.init_args.get("dirpath")
            ),
            None,
        )
        logger = trainer.get("logger")
        if isinstance(logger, list):
            logger = logger[0] if logger else False
        if dirpath or logger is False:  # checkpoints in one fixed folder: ModelCheckpoint's, or <root>/checkpoints
            ckpt_dir = os.path.expanduser(str(dirpath)) if dirpath else os.path.join(root, "checkpoints")
            hint = "set another ModelCheckpoint dirpath" if dirpath else "set another --trainer.default_root_dir"
            return cls("fixed", root, root_flag, folder=ckpt_dir, ckpt_dir=ckpt_dir, new_hint=hint)
        # Lightning's default logger: TensorBoardLogger(default_root_dir, "lightning_logs")
        if logger is None or logger is True:

            def pin(v, trainer=trainer):
                trainer.logger = Namespace(
                    class_path="lightning.pytorch.loggers.TensorBoardLogger",
                    init_args=Namespace(save_dir=root, name="lightning_logs", version=v),
                )

            return cls("numbered", root, root_flag, base=os.path.join(root, "lightning_logs"), pin=pin)
        args = logger.get("init_args") if hasattr(logger, "get") else None
        if _class_name(logger) not in VERSIONED_LOGGERS or args is None or args.get("save_dir") is None:
            return cls("other", root, root_flag)  # W&B, MLflow, ...: their own run ids; leave them to Lightning
        save_dir, flag = os.path.expanduser(str(args.save_dir)), "--trainer.logger.init_args.save_dir"
        base = os.path.join(save_dir, str(args.name)) if args.get("name") else save_dir
        version = args.get("version")
        if version is None:
            return cls("numbered", save_dir, flag, base=base, pin=lambda v: args.__setitem__("version", v))
        folder = os.path.join(base, version if isinstance(version, str) else f"version_{version}")
        return cls(
            "fixed",
            save_dir,
            flag,
            folder=folder,
            ckpt_dir=os.path.join(folder, "checkpoints"),
            new_hint="name a new one with --trainer.logger.init_args.version NAME",
        )


def _has_logs(folder: str) -> bool:
    return any(
        glob.glob(os.path.join(glob.escape(folder), pattern))
        for pattern in ("events.out.tfevents.*", "metrics.csv", "cfg_eval.csv")
    )


def _resumable_newest_version(base: str) -> int:
    """The newest ``version_N`` under ``base``, which must hold a ``last*.ckpt``: an older run is never picked behind
    the user's back (it may be finished, and resuming it would rewrite its evaluation and export)."""
    versions = sorted(
        int(m.group(1))
        for path in glob.glob(os.path.join(glob.escape(base), "version_*"))
        if (m := re.fullmatch(r"version_(\d+)", os.path.basename(path)))
    )
    if not versions:
        raise PriorswapError(
            f"--ckpt_path last: nothing to resume, no {base}/version_*/checkpoints/last.ckpt; "
            "start without --ckpt_path to begin a new run"
        )
    newest = versions[-1]
    if _last_checkpoint(os.path.join(base, f"version_{newest}")) is None:
        older = [v for v in versions[:-1] if _last_checkpoint(os.path.join(base, f"version_{v}"))]
        hint = (
            f"; {os.path.join(base, f'version_{older[-1]}')} has one: resume it with "
            f"--trainer.logger.init_args.version {older[-1]}"
            if older
            else ""
        )
        raise PriorswapError(
            f"--ckpt_path last: the newest run {os.path.join(base, f'version_{newest}')} has no checkpoint yet{hint}, "
            "or start without --ckpt_path to begin a new run"
        )
    return newest


def _last_checkpoint(folder: str) -> str | None:
    found = sorted(glob.glob(os.path.join(glob.escape(folder), "checkpoints", "last*.ckpt")))
    return found[0] if found else None


def checkpoint_step(path: str) -> int | None:
    """The optimiser step a Lightning checkpoint was saved at (memory-mapped, weights-only: nothing is unpickled)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is Lightning's to report when it resumes
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    return int(step) if step is not None else None


def _refuse_finished(folder: str, max_steps) -> None:
    """Resuming a run that already reached ``max_steps`` would only redo its last evaluation and export."""
    ckpt = _last_checkpoint(folder)
    step = None if ckpt is None else checkpoint_step(ckpt)
    if step is not None and max_steps is not None and 0 <= int(max_steps) <= step:
        raise PriorswapError(
            f"--ckpt_path last: {folder} already finished (step {step}, --trainer.max_steps {max_steps}); "
            "raise --trainer.max_steps to continue it, or start without --ckpt_path to begin a new run"
        )


def _class_name(spec) -> str:
    path = spec.get("class_path") if hasattr(spec, "get") else None
    return str(path).rsplit(".", 1)[-1] if path else ""
