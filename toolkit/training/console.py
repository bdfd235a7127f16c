"""What a fit prints besides progress: Lightning's advertising tips go, and so does the "Checkpoint directory exists"
warning when a fit resumes its own run folder (the folder holds the earlier checkpoints by design)."""

from __future__ import annotations

import logging
import os
import re
import warnings

from lightning_utilities.core import rank_zero

TIP_PREFIX = "💡 Tip:"  # Lightning's suggestions to install its cloud packages (litlogger, litmodels), once per fit


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP_PREFIX)


def hide_lightning_tips() -> None:
    """Drop the tips at the loggers Lightning's ``rank_zero_info`` writes to; every other info line stays."""
    loggers = {
        rank_zero.log,
        logging.getLogger("lightning.pytorch.utilities.rank_zero"),
        logging.getLogger("lightning.fabric.utilities.rank_zero"),
    }
    for logger in loggers:
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())


def resuming_run_folder(ckpt_path) -> None:
    """Silence the non-empty checkpoint folder warning for the folder a resumed fit continues in.

    ``last`` resumes the run folder ``priorswap fit`` chose itself (its newest run, or the named one), so any
    folder's warning is about that run; an explicit checkpoint file silences only its own folder's.
    """
    if ckpt_path is None:
        return
    if str(ckpt_path) == "last":
        where = ".*"
    else:
        folder = os.path.dirname(os.path.abspath(os.path.expanduser(str(ckpt_path))))
        where = "(" + "|".join(re.escape(f) for f in sorted({folder, os.path.realpath(folder)})) + ")"
    warnings.filterwarnings("ignore", message=rf"Checkpoint directory {where} exists and is not empty\.$")
