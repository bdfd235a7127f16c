"""What runs during training: the vanilla-vs-swapped CFG evaluation callbacks (DiT labels, text-to-image prompts)."""

from priorswap.callbacks.cfg_eval import PriorSwapEval
from priorswap.callbacks.t2i_eval import T2IPriorSwapEval

__all__ = ["PriorSwapEval", "T2IPriorSwapEval"]
