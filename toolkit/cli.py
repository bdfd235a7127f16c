"""The ``priorswap`` command: maps command names to small modules under ``toolkit/commands``.

- ``fit`` / ``validate`` hand over to LightningCLI (``priorswap.toolkit.training.cli``), so recipes are plain YAML
  of typed constructor arguments.
- every other command is an argparse sub-command; each module exposes ``register(subparsers)`` and sets
  ``func`` on its parser. User mistakes (:class:`PriorswapError`) become one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import PriorswapError

# sub-command -> module under priorswap.toolkit.commands exposing register(subparsers)
COMMANDS = {
    "sample": "priorswap.toolkit.commands.sample",
    "bench": "priorswap.toolkit.commands.bench",
    "eval": "priorswap.toolkit.commands.evaluate",
    "demo": "priorswap.toolkit.commands.demo",
    "export": "priorswap.toolkit.commands.export",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line (``priorswap: error: ...``) with exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="priorswap", description="Fine-tune diffusion models and sample them with a swapped unconditional prior.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, module in COMMANDS.items():
        importlib.import_module(module).register(sub)
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (e.g. priorswap {name} -c recipes/tiny_food101.yaml)", add_help=False)
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
            argv.insert(1, "dit")  # issue 4's flag form `priorswap eval --model ...` is `priorswap eval dit ...`
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except PriorswapError as e:
        print(f"priorswap: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("priorswap: interrupted", file=sys.stderr)
        return 130


def _user_error_in_chain(e: BaseException) -> PriorswapError | None:
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, PriorswapError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


if __name__ == "__main__":
    sys.exit(main())
