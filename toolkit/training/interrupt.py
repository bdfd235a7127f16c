"""Ctrl-C and SIGTERM during fit save a resumable ``last.ckpt`` before the process exits.

Lightning notes SIGTERM (a cluster's preemption), forwards it to the ranks it launched, and stops the training loop
at a step boundary by raising ``SIGTERMException``. It saves nothing, though, and under DDP its handler is not safe
(below). This callback adds:

- at the end of the step in which the signal came (after the other callbacks' step-end work, such as an
  evaluation), it writes the checkpoint callback's ``last.ckpt`` with ``Trainer.save_checkpoint``, the same state a
  step-end ``ModelCheckpoint`` saves, so ``--ckpt_path last`` picks it and the resumed run continues exactly; then it
  stops the fit with Lightning's ``SIGTERMException``, on every rank at the same step;
- the first Ctrl-C during training is turned into that same SIGTERM (Lightning's own KeyboardInterrupt path stops
  wherever the signal lands, possibly half-way through an optimiser step, and saves nothing); a second Ctrl-C stops
  at once, without a checkpoint, as before.

The signal itself only sets a flag: every rank finishes the step in progress (a step blocks nothing, and is
never cut short), and the ranks agree at its end, with one all-reduce, whether any of them was signalled. Lightning's
own SIGTERM handler is replaced for the duration of training, because it runs a ``broadcast`` inside the signal
handler: under DDP that collective starts wherever the signal lands, and when every rank is signalled (a preempted
job) while one of them waits in the step's gradient all-reduce, the two ranks' collectives no longer pair up and the
job crashes or hangs instead of saving. Before training starts (model loading, the sanity check) Lightning's
handler is still the one in place.

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
        self._trainer: L.Trainer | None = None
        self.requested = False  # SIGTERM (or Ctrl-C) came to this rank; acted on at the step end
        self.stopping = False  # every rank agreed to stop at this step end: saving, then SIGTERMException
        self.saved: str | None = None  # the checkpoint written on the last interruption
        self._saved_step = -1

    # -- Ctrl-C -> Lightning's SIGTERM handling -------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._previous_sigint = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
        # after Lightning's signal connector registered its handler; its teardown restores the original one
        self._trainer, self.requested, self.stopping = trainer, False, False
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        if not self.requested and self._trainer is not None and self._trainer.strategy.launcher is not None:
            self._trainer.strategy.launcher.kill(signum)  # ranks Lightning started itself get it too, as before
        self.requested = True

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
        if stop_requested(trainer, self):
            self.stopping = True
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
        # the checkpoint callback's own record of its last.ckpt, saved in this checkpoint: without it the resumed
        # run's callback finds a last.ckpt it did not write and saves beside it as last-v1.ckpt
        next(c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)).last_model_path = path
        trainer.save_checkpoint(path, weights_only=False)  # every rank: it gathers state and ends with a barrier
        self.saved = path
        if trainer.is_global_zero:
            print(
                f"priorswap: stopped at step {trainer.global_step}; saved {path} "
                "(continue with the same command and --ckpt_path last)",
                file=sys.stderr,
                flush=True,
            )


def stop_requested(trainer: L.Trainer, interrupt: SaveOnInterrupt | None = None) -> bool:
    """Whether any rank was signalled to stop; a collective, so every rank calls it at the same point of a step."""
    if interrupt is None:
        interrupt = next((c for c in trainer.callbacks if isinstance(c, SaveOnInterrupt)), None)
    mine = trainer.received_sigterm or (interrupt is not None and interrupt.requested)
    return bool(trainer.strategy.reduce_boolean_decision(mine, all=False))


def stopping(trainer: L.Trainer) -> bool:
    """Whether this fit is saving its interruption checkpoint now (no collective: the ranks already agreed)."""
    return any(isinstance(c, SaveOnInterrupt) and c.stopping for c in trainer.callbacks)


def last_checkpoint_path(trainer: L.Trainer) -> str | None:
    """Where the first ``ModelCheckpoint`` keeps ``last.ckpt``: the file ``--ckpt_path last`` resumes from."""
    cb = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    if cb is None or cb.dirpath is None:
        return None
    return cb.format_checkpoint_name(dict(trainer.callback_metrics), cb.CHECKPOINT_NAME_LAST)


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0
