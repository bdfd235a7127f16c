"""What ``priorswap fit --help`` says first: which classes a recipe can name, and how to see one's arguments.

Importing the datamodules and the callback here also makes jsonargparse list them as known subclasses of
``--data`` and ``--trainer.callbacks`` (it lists the subclasses imported when the parser is built); both are cheap
once Lightning is imported.
"""

from __future__ import annotations

from importlib import resources

import lightning as L

import priorswap.callbacks
import priorswap.data

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def shipped_datamodules() -> list[str]:
    """Class paths of the datamodules ``priorswap.data`` exports (every concrete one a recipe can name)."""
    found = []
    for name in priorswap.data.__all__:
        obj = getattr(priorswap.data, name)
        if isinstance(obj, type) and issubclass(obj, L.LightningDataModule) and name.endswith("DataModule"):
            if obj is not priorswap.data.ImageDataModule:  # the shared base, not a dataset
                found.append(f"priorswap.data.{name}")
    return sorted(found)


def shipped_recipes() -> list[str]:
    files = resources.files("priorswap.recipes")
    return sorted(p.name for p in files.iterdir() if p.name.endswith(".yaml"))


def description(subcommand: str) -> str:
    callback = f"priorswap.callbacks.{priorswap.callbacks.PriorSwapEval.__name__}"
    return (
        f"LightningCLI {subcommand} of priorswap.toolkit.training.module.DiTFineTune on a datamodule, from a recipe: "
        f"priorswap {subcommand} -c RECIPE.yaml [--section.key VALUE ...]. "
        f"--data takes one of {', '.join(shipped_datamodules())} (its arguments: --data.help CLASS). "
        f"The vanilla-vs-swapped evaluation as it trains is the callback {callback} "
        f"(its arguments: --trainer.callbacks.help {callback}). "
        f"Shipped recipes (-c NAME works from any folder): {', '.join(shipped_recipes())}."
    )


def subcommand_parser_kwargs() -> dict[str, dict[str, str]]:
    # argparse's own usage lists all ~60 options, above the description, and again with every parse error
    return {
        name: {"description": description(name), "usage": f"priorswap {name} [-h] -c RECIPE.yaml [--KEY VALUE ...]"}
        for name in SUBCOMMANDS
    }
