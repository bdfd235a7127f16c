"""What runs during training: the vanilla-vs-swapped CFG evaluation callback."""

from priorswap.callbacks.cfg_eval import PriorSwapEval

__all__ = ["PriorSwapEval"]
