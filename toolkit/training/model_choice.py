"""Which LightningModule ``priorswap fit`` builds: the DiT fine-tune's plain settings, or any module named by class.

A recipe whose ``model:`` holds a ``class_path`` (or a ``--model.class_path`` flag) selects that module, e.g.
``priorswap.toolkit.training.t2i_module.T2IFineTune`` for a text-to-image fine-tune; the DiT recipes, which give
``model:`` as plain settings, keep binding the CLI to ``DiTFineTune`` exactly as before (their links and start-up
checks are the DiT's). Recipes are read as the CLI reads them: ``-c`` files in order, each after the ``config:``
files it names (relative to itself).
"""

from __future__ import annotations

import os

import yaml

CONFIG_FLAGS = ("-c", "--config")


def names_model_class(argv: list[str]) -> bool:
    """True when a recipe or flag in ``argv`` names the model by ``class_path``."""
    for i, arg in enumerate(argv):
        if arg.startswith("--model.class_path"):
            return True
        value = None
        if arg in CONFIG_FLAGS and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value is not None and _recipe_names_class(value, depth=0):
            return True
    return False


def _recipe_names_class(path: str, depth: int) -> bool:
    if depth > 8 or not os.path.isfile(path):
        return False  # a missing recipe is the CLI's to report
    with open(path) as f:
        try:
            cfg = yaml.safe_load(f)
        except yaml.YAMLError:
            return False
    if not isinstance(cfg, dict):
        return False
    model = cfg.get("model")
    if isinstance(model, dict) and "class_path" in model:
        return True
    included = cfg.get("config")
    for ref in included if isinstance(included, list) else [included] if included else []:
        if _recipe_names_class(os.path.join(os.path.dirname(path), str(ref)), depth + 1):
            return True
    return False
