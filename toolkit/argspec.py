"""A command is a dataclass: its typed fields are the flags, and its parser is derived from them.

    @dataclass
    class Export:
        ckpt: str = arg(help="a checkpoint written by priorswap fit")
        out: str = arg(help="output folder")

    add_arguments(parser, Export)        # --ckpt CKPT --out OUT, both required
    cfg = from_namespace(Export, ns)     # Export(ckpt=..., out=...)

Field types map to argparse as a user of the command line expects: ``int``/``float``/``str`` take one value,
``list[X]`` takes one or more space-separated values (``--labels 0 3 7``), ``tuple[X, X]`` exactly two,
``X | None`` is optional with no default, a ``bool`` defaulting to False is a switch, and ``Literal[...]``
gives the choices. A field without a default is a required flag. ``arg()`` adds the help text and, where the flag
differs from the field (``--prior`` repeated into ``priors``), how it is spelled. jsonargparse's own derivation
is not used for these commands because it reads lists as ``--labels [0,3,7]``, which would break the flags
users already type; the Lightning commands (``fit``) do use it, through LightningCLI.

Only the standard library is imported here, so ``priorswap sample --help`` and any usage mistake answer at once,
before torch is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

_META = "priorswap_cli"


def arg(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    append: bool = False,
    metavar: str | tuple[str, ...] | None = None,
    choices: typing.Sequence[Any] | None = None,
    parse: Callable[[Any], Any] | None = None,
    kinds: tuple[str, ...] | None = None,
    group: str | None = None,
    type: Callable[[str], Any] | None = None,
    positional: bool = False,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field that is also a command-line flag.

    ``help`` may name ``{default}`` and any key of the ``context`` given to :func:`add_arguments` (e.g. the
    paper's settings of a kind). ``append``: the flag may be repeated, each use adding one value (``--prior A
    --prior B``). ``parse`` turns the parsed value into the field's value after parsing and may raise
    :class:`PriorswapError`. ``type``: how one command-line value is read, where the field's own type says
    otherwise (``--shard 0/4`` is a string, parsed into a tuple). ``positional``: a bare argument
    (``priorswap convert dynamicrafter CKPT OUT``) instead of a flag, in declaration order. ``kinds``: the flag exists only on those sub-commands of a shared dataclass.
    """
    meta = {
        _META: dict(
            help=help,
            flag=flag,
            append=append,
            metavar=metavar,
            choices=choices,
            parse=parse,
            kinds=kinds,
            group=group,
            type=type,
            positional=positional,
        )
    }
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def cli_fields(cls: type, kind: str | None = None) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are flags (on sub-command ``kind``)."""
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META)
        if meta is None or not f.init:
            continue
        if meta["kinds"] is not None and kind not in meta["kinds"]:
            continue
        out.append(f)
    return out


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    kind: str | None = None,
    context: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add one flag per field of ``cls``. ``defaults`` overrides field defaults on this sub-command only (the
    dataclass keeps its own, for the Python API)."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}

    def rank(f: dataclasses.Field) -> tuple[bool, int]:  # required flags first (shared ones leading), then the
        depth = next(i for i, k in enumerate(cls.__mro__) if f.name in k.__dict__.get("__annotations__", {}))
        optional = (defaults or {}).get(f.name, _default_of(f)) is not dataclasses.MISSING  # command's own options
        return optional, depth if optional else -depth

    fields = sorted(cli_fields(cls, kind), key=rank)
    for f in fields:
        meta = f.metadata[_META]
        tp, _ = _unwrap(hints[f.name])
        default = (defaults or {}).get(f.name, _default_of(f))
        required = default is dataclasses.MISSING
        kw: dict[str, Any] = {"dest": f.name}
        origin = typing.get_origin(tp)
        if meta["type"] is not None:
            kw["type"] = meta["type"]
        elif tp is bool:
            kw["action"] = "store_false" if default is True else "store_true"
        elif meta["append"]:
            (item,) = typing.get_args(tp) or (str,)
            kw.update(action="append", type=item)
        elif origin is list:
            (item,) = typing.get_args(tp)
            kw.update(nargs="+", type=item)
        elif origin is tuple:
            items = typing.get_args(tp)
            kw.update(nargs=len(items), type=items[0])
        elif origin is typing.Literal:
            kw.update(choices=list(typing.get_args(tp)), type=type(typing.get_args(tp)[0]))
        else:
            kw["type"] = tp
        if meta["choices"] is not None:
            kw["choices"] = list(meta["choices"])
        if meta["metavar"] is not None:
            kw["metavar"] = meta["metavar"]
        if required:
            kw["required"] = True
        else:
            kw["default"] = list(default) if meta["append"] else default
        ctx = {**(context or {}), "default": "" if required else _show(default)}
        text = meta["help"].format(**ctx)
        if not required and tp is not bool and default not in (None, [], ()) and "default" not in meta["help"]:
            text += f" (default {_show(default)})"
        kw["help"] = text.replace("%", "%%")
        target = parser
        if meta["group"]:
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        if meta["positional"]:
            kw.pop("dest")
            kw.pop("required", None)
            kw.setdefault("metavar", f.name.upper())
            target.add_argument(f.name, **kw)
            continue
        target.add_argument(meta["flag"] or "--" + f.name.replace("_", "-"), **kw)


def from_namespace(cls: type, ns: argparse.Namespace, kind: str | None = None, fixed: dict[str, Any] | None = None):
    """The dataclass instance a parsed command line describes (``fixed``: fields the sub-command sets itself)."""
    values = dict(fixed or {})
    hints = typing.get_type_hints(cls)
    for f in cli_fields(cls, kind):
        value = getattr(ns, f.name)
        if isinstance(value, list) and typing.get_origin(_unwrap(hints[f.name])[0]) is tuple:
            value = tuple(value)  # argparse gives nargs=N values as a list
        parse = f.metadata[_META]["parse"]
        values[f.name] = parse(value) if parse is not None and value is not None else value
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class Command:
    """One sub-command: its dataclass, the function that runs it, and what differs on this sub-command."""

    spec: type  # the dataclass; ``spec.check()`` (if defined) runs after parsing, before ``run``
    run: Callable[[Any], int]  # run(instance) -> exit code; imports what it needs itself
    help: str
    kind: str | None = None  # selects the ``kinds=``-restricted flags of a shared dataclass
    context: dict[str, Any] | None = None  # names the help texts may use
    defaults: dict[str, Any] | None = None  # this sub-command's defaults where they differ from the dataclass's
    fixed: dict[str, Any] | None = None  # fields the sub-command sets itself (e.g. ``kind``)

    def register(self, sub, name: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=self.help, description=self.help)
        add_arguments(p, self.spec, self.kind, self.context, self.defaults)
        p.set_defaults(_command=self)
        return p

    def build(self, ns: argparse.Namespace):
        return from_namespace(self.spec, ns, self.kind, self.fixed)
