"""Every recipe parses against the real classes' typed signatures (LightningCLI, nothing instantiated)."""
import glob
import os

import pytest

from priorswap.toolkit.training.cli import PriorswapCLI
from priorswap.toolkit.training.module import DiTFineTune

RECIPES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "recipes", "*.yaml")))


class ParseOnly(PriorswapCLI):
    def instantiate_classes(self) -> None:  # validate types and class paths, build nothing (no hub access)
        pass


def test_there_are_recipes():
    names = {os.path.basename(r) for r in RECIPES}
    assert {"dit_xl2_food101.yaml", "dit_xl2_sun397.yaml", "dit_xl2_caltech101.yaml", "tiny_food101.yaml",
            "demo_base.yaml", "demo_finetune.yaml"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipe_parses(recipe):
    import lightning as L

    cli = ParseOnly(DiTFineTune, L.LightningDataModule, subclass_mode_data=True, run=False, args=["-c", recipe])
    cfg = cli.config
    assert cfg.data.class_path.startswith("priorswap.data.")
    assert cfg.trainer.max_steps > 0
    if "xl2" in recipe:  # the paper's settings (appendix B)
        assert cfg.model.pretrained == "facebook/DiT-XL-2-256" and cfg.model.vae == "stabilityai/sd-vae-ft-ema"
        assert cfg.model.lr == 1e-4 and cfg.model.cfg_dropout == 0.1 and cfg.model.ema_decay == 0.9999
        assert cfg.trainer.max_steps == 20000 and cfg.data.init_args.batch_size == 64 and cfg.data.init_args.resolution == 256
