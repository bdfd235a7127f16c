"""The ``priorswap`` command.

- ``fit`` / ``validate`` / ``test`` / ``predict`` hand over to LightningCLI (``priorswap.toolkit.training.cli``), so
  recipes are plain YAML of typed constructor arguments.
- every other command is a dataclass in ``toolkit/commands`` (its fields are the flags, see
  :mod:`priorswap.toolkit.argspec`) and a function that runs it. The command line is parsed and checked
  (``spec.check()``) before the function imports torch or loads anything, so a mistake answers at once.
  User mistakes (:class:`PriorswapError`) are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import PriorswapError

# bitsandbytes (pulled in by pyiqa, imported by peft when present) logs a warning on every import on a CPU machine
# without its optional `kernels` package; nothing here quantizes, so only its errors are shown.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

# command -> module under priorswap.toolkit.commands: COMMANDS (sub-commands) and HELP, or a single COMMAND
GROUPS = {
    "sample": "priorswap.toolkit.commands.sample",
    "eval": "priorswap.toolkit.commands.evaluate",
    "bench": "priorswap.toolkit.commands.bench",
    "convert": "priorswap.toolkit.commands.convert",
    "demo": "priorswap.toolkit.commands.demo",
    "export": "priorswap.toolkit.commands.export",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line (``priorswap: error: ...``) with exit code 2, and never
    prefix-matches a flag (``--num`` is an error, not ``--num-samples``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="priorswap", description="Fine-tune diffusion models and sample them with a swapped unconditional prior."
    )
    sub = parser.add_subparsers(dest="_command_name", metavar="command", required=True, parser_class=OneLineParser)
    for name, module_name in GROUPS.items():
        module = importlib.import_module(module_name)
        if hasattr(module, "COMMAND"):
            module.COMMAND.register(sub, name)
            continue
        group = sub.add_parser(name, help=module.HELP, description=module.HELP)
        kinds = group.add_subparsers(dest="_kind_name", metavar="kind", required=True, parser_class=OneLineParser)
        for kind, command in module.COMMANDS.items():
            command.register(kinds, kind)
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(
            name, help=f"LightningCLI {name} (e.g. priorswap {name} -c dit_xl2_food101.yaml)", add_help=False
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            from .training.cli import run_lightning_cli

            try:
                run_lightning_cli(argv)
            except Exception as e:  # jsonargparse wraps errors raised while it instantiates classes
                cause = _user_error_in_chain(e)
                if cause is None:
                    raise
                raise cause from None
            return 0
        if len(argv) > 1 and argv[0] == "eval" and argv[1].startswith("-") and argv[1] not in ("-h", "--help"):
            argv.insert(
                1, "dit"
            )  # the older flag form `priorswap eval --model ...` still means `priorswap eval dit ...`
        try:
            ns = build_parser().parse_args(argv)
        except SystemExit as e:  # --help (0) or a usage mistake, already printed in one line (2)
            return int(e.code or 0)
        command = ns._command
        spec = command.build(ns)
        if hasattr(spec, "check"):
            spec.check()
        return int(command.run(spec) or 0)
    except PriorswapError as e:
        print(f"priorswap: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("priorswap: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(e, SIGTERMException):  # a fit stopped by SIGTERM or Ctrl-C after saving (training/interrupt.py)
            return 143  # 128 + SIGTERM: not a success, so a scheduler or script knows to run it again
        raise


def _user_error_in_chain(e: BaseException) -> PriorswapError | None:
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, PriorswapError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


if __name__ == "__main__":
    sys.exit(main())
