"""``priorswap fit|validate|test -c recipes/X.yaml``: LightningCLI over :class:`DiTFineTune` and any datamodule.

Re-running with the same log directory works: the saved config is overwritten (SaveConfigCallback's
``overwrite``). Recipes are YAML of the typed constructor arguments; command-line flags override them.
"""
from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningCLI

from .module import DiTFineTune


class PriorswapCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("seed_everything", "model.seed")


def run_lightning_cli(argv: list[str]) -> PriorswapCLI:
    return PriorswapCLI(
        DiTFineTune,
        L.LightningDataModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        args=argv,
        auto_configure_optimizers=False,
        # our datamodules shard and order data themselves (data/sampler.py), resumable mid-epoch
        trainer_defaults={"use_distributed_sampler": False},
    )
