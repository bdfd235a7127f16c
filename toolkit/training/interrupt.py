"""Ctrl-C and SIGTERM during fit save a resumable ``last.ckpt`` before the process exits.

Lightning already handles SIGTERM (a cluster's preemption) well: its signal connector notes the signal, forwards it
to the other ranks it launched, and the training loop stops at the next step boundary by raising
``SIGTERMException``, on every rank together under DDP. It saves nothing, though. This callback adds the two
missing parts:

- at the end of the step in which the signal came (after the other callbacks' step-end work, such as an
  evaluation), it writes the checkpoint callback's ``last.ckpt`` with ``Trainer.save_checkpoint``, the same state a
  step-end ``ModelCheckpoint`` saves, so ``--ckpt_path last`` picks it and the resumed run continues exactly; then it
  stops the fit with Lightning's ``SIGTERMException``, on every rank at the same step;
- the first Ctrl-C during training is turned into that same SIGTERM (Lightning's own KeyboardInterrupt path stops
  wherever the signal lands, possibly half-way through an optimiser step, and saves nothing); a second Ctrl-C stops
  at once, without a checkpoint, as before.

Other exceptions save nothing: a step that failed half-way is not a state to resume from.
"""

from __future__ import annotations

import signal
import sys
import threading

import lightning as L
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SaveOnInterrupt(Callback):
    """Save ``last.ckpt`` when fit is stopped by SIGTERM or Ctrl-C; then the run exits (resume with ``--ckpt_path last``)."""

    def __init__(self):
        self._previous_sigint = None
        self.saved: str | None = None  # the checkpoint written on the last interruption
        self._saved_step = -1

    # -- Ctrl-C -> Lightning's SIGTERM handling -------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._previous_sigint = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        self._restore_sigint()  # a second Ctrl-C interrupts at once (KeyboardInterrupt), as before
        if _is_rank_zero():
            sys.stderr.write(
                "\npriorswap: Ctrl-C: saving a checkpoint when this step ends, then stopping "
                "(Ctrl-C again stops at once, without one)\n"
            )
            sys.stderr.flush()
        signal.raise_signal(signal.SIGTERM)  # handled by Lightning's signal connector, as a preemption is

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
        self._previous_sigint = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigint()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_sigint()

    # -- the checkpoint ---------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        # any rank signalled stops all: Lightning's own check compares only rank 0's flag, at the next step's start
        if trainer.strategy.reduce_boolean_decision(trainer.received_sigterm, all=False):
            self._save(trainer)
            raise SIGTERMException()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        # SIGTERM seen by Lightning's loop before this callback's step end (during validation, say): save there
        if isinstance(exception, SIGTERMException) and self._saved_step != trainer.global_step:
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        self._saved_step = trainer.global_step
        path = last_checkpoint_path(trainer)
        if path is None:
            if trainer.is_global_zero:
                print("priorswap: stopped; checkpointing is off, so nothing was saved", file=sys.stderr, flush=True)
            return
        trainer.save_checkpoint(path, weights_only=False)  # every rank: it gathers state and ends with a barrier
        self.saved = path
        if trainer.is_global_zero:
            print(
                f"priorswap: stopped at step {trainer.global_step}; saved {path} "
                "(continue with the same command and --ckpt_path last)",
                file=sys.stderr,
                flush=True,
            )


def last_checkpoint_path(trainer: L.Trainer) -> str | None:
    """Where the first ``ModelCheckpoint`` keeps ``last.ckpt``: the file ``--ckpt_path last`` resumes from."""
    cb = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    if cb is None or cb.dirpath is None:
        return None
    return cb.format_checkpoint_name(dict(trainer.callback_metrics), cb.CHECKPOINT_NAME_LAST)


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0
