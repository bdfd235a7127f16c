"""One line for a misspelled recipe key or flag, instead of jsonargparse's usage dump.

jsonargparse reports an unknown key in three shapes: ``Subcommand 'fit' does not accept option 'trainer.max_step'``
(a section key), a nested ``Problem with given class_path 'X': ... Option 'k' is not accepted`` inside a union-type
dump (an ``init_args`` key of a callback, datamodule, extractor, ...), and ``unrecognized arguments: --flag`` (the
command line). Each becomes: the key, where it is (recipe file and the path in it, or the command-line flag) and
the nearest valid name at that level. Anything else is left to jsonargparse's own message.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re

import yaml
from jsonargparse import ArgumentParser

_SUBCOMMAND_KEY = re.compile(r"Subcommand '([^']+)' does not accept option '([^']+)'")
_PARSER_KEY = re.compile(r'Parser key "([^"]+)":')
_CLASS = re.compile(r"Problem with given class_path '([^']+)':")
_OPTION = re.compile(r"Option '([^']+)' is not accepted")
CONFIG_FLAGS = ("-c", "--config")


def one_line_error(parser, message: str, ex: Exception | None = None) -> str | None:
    """The one-line form of ``message`` (without the ``priorswap: error:`` prefix), or None to keep jsonargparse's."""
    args = list(getattr(parser, "args", None) or [])
    if message.lower().startswith("unrecognized arguments"):
        return _unrecognized(parser, message)
    m = _SUBCOMMAND_KEY.search(message)
    if m:
        return _section_key(getattr(ex, "subcommand_parser", None) or parser, m.group(2), args)
    chain = _class_chain(message)
    if chain is not None:
        return _init_arg_key(*chain, args)
    return None


# -- the three shapes -------------------------------------------------------------------------------------
def _unrecognized(parser, message: str) -> str:
    line = f"{message} (flags are spelled in full; see --help)"
    flag = next((w.split("=", 1)[0] for w in message.split(":", 1)[-1].split() if w.startswith("--")), None)
    if flag is None:
        return line
    options = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    parent, _, name = flag.rpartition(".")
    siblings = {o.rpartition(".")[2]: o for o in options if parent and o.rpartition(".")[0] == parent}
    close = [siblings[n] for n in difflib.get_close_matches(name, list(siblings), n=1)] if siblings else []
    close = close or difflib.get_close_matches(flag, options, n=1, cutoff=0.8)
    return f"{line}; did you mean {close[0]}?" if close else line


def _section_key(parser, key: str, args: list[str]) -> str:
    """``trainer.max_step``: the first component that names nothing, suggested from its siblings."""
    dests = [a.dest.split(".") for a in parser._actions if a.dest and a.dest != "help"]
    parts = key.split(".")
    depth = next((i for i in range(len(parts)) if not any(d[: i + 1] == parts[: i + 1] for d in dests)), len(parts) - 1)
    bad, level = parts[: depth + 1], parts[:depth]
    siblings = sorted({d[depth] for d in dests if len(d) > depth and d[:depth] == level})
    where = _find_in_recipes(args, lambda dotted, owner: dotted == bad) or f"a recipe at {'.'.join(bad)}"
    return _line(bad[-1], where, siblings)


def _class_chain(message: str) -> tuple[str, str, str] | None:
    """(outer parser key, innermost class path, key) from a nested union-type message, by indentation."""
    stack: list[tuple[int, str, str]] = []
    for line in message.splitlines():
        indent = len(line) - len(line.lstrip())
        for kind, pattern in (("key", _PARSER_KEY), ("class", _CLASS), ("option", _OPTION)):
            m = pattern.search(line)
            if not m:
                continue
            while stack and stack[-1][0] >= indent:
                stack.pop()
            if kind != "option":
                stack.append((indent, kind, m.group(1)))
                break
            keys = [v for _, k, v in stack if k == "key"]
            classes = [v for _, k, v in stack if k == "class"]
            if keys and classes:
                return keys[0], classes[-1], m.group(1)
            return None
    return None


def _init_arg_key(outer: str, class_path: str, key: str, args: list[str]) -> str:
    short = class_path.rsplit(".", 1)[-1]

    def found(dotted: list[str], owner: str | None) -> bool:
        return (
            dotted[-1] == key
            and ".".join(dotted).startswith(outer + ".")
            and (owner is None or owner.rsplit(".", 1)[-1] == short)
        )

    where = _find_in_recipes(args, found) or _find_on_command_line(args, outer, key) or f"under {outer}"
    return _line(key, where, _init_args_of(class_path), f" of {class_path}")


def _line(key: str, where: str, valid: list[str], owner: str = "") -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "see --help for the accepted keys"
    return f"unknown key '{key}'{owner} {where}; {hint}"


# -- where the key is -------------------------------------------------------------------------------------
def _find_in_recipes(args: list[str], match) -> str | None:
    """``FILE at PATH`` of the first key in the recipes (``-c``, and the ``config:`` files they load) that matches."""
    for path in _recipe_files(args):
        try:
            with open(path) as f:
                tree = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue
        for shown, dotted, owner in _walk(tree, "", [], None):
            if match(dotted, owner):
                return f"in {path} at {shown}"
    return None


def _find_on_command_line(args: list[str], outer: str, key: str) -> str | None:
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag.startswith(f"--{outer}.") and flag.rsplit(".", 1)[-1] == key:
            return f"on the command line ({flag})"
    return None


def _recipe_files(args: list[str]) -> list[str]:
    given = [args[i + 1] for i, a in enumerate(args[:-1]) if a in CONFIG_FLAGS]
    given += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    out: list[str] = []
    for path in given:
        _add_with_includes(path, out)
    return out


def _add_with_includes(path: str, out: list[str]) -> None:
    """The files ``config:`` lines load come first (they are read first), then the file itself."""
    if path in out or not os.path.isfile(path) or len(out) > 50:
        return
    try:
        with open(path) as f:
            tree = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        tree = None
    included = tree.get("config") if isinstance(tree, dict) else None
    for inc in included if isinstance(included, list) else [included] if included else []:
        near = os.path.join(os.path.dirname(path), os.path.expanduser(str(inc)))
        _add_with_includes(near if os.path.isfile(near) else str(inc), out)
    out.append(path)


def _walk(node, shown: str, dotted: list[str], owner: str | None):
    """(path as written, dotted key path without list indices, class_path of the enclosing object) of every key."""
    if isinstance(node, dict):
        owner = node.get("class_path", owner) if isinstance(node.get("class_path"), str) else owner
        for k, v in node.items():
            here = f"{shown}.{k}" if shown else str(k)
            path = dotted + str(k).split(".")
            yield here, path, owner
            yield from _walk(v, here, path, owner)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{shown}[{i}]", dotted, None)


# -- what is valid ------------------------------------------------------------------------------------------
def _init_args_of(class_path: str) -> list[str]:
    """The constructor arguments jsonargparse accepts for ``class_path`` (it also follows ``**kwargs`` to parents)."""
    try:
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, "x", fail_untyped=False)
    except Exception:  # an unimportable class has no names to suggest; the line still names the key
        return []
    return sorted({a.dest.split(".")[1] for a in parser._actions if a.dest.startswith("x.")})
