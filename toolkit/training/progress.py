"""Fit progress a person can read: plain lines in a log file, Lightning's bar (without its oddities) on a terminal.

When stdout is not a terminal (``nohup``, a cluster job's log, ``| tee``), a tqdm bar's carriage returns pile up into
one unreadable line and rich's live bar prints nothing until the fit ends. :class:`LogLinesProgressBar` prints a line
every ``every_s`` seconds instead. On a terminal the bar Lightning picks stays, without the ``v_num`` item (the run
folder is printed elsewhere) and without the ``/-2`` Lightning appends to "Epoch N" when only ``max_steps`` bounds the
fit. :func:`readable_progress` swaps Lightning's default bar for one of these; a bar named in a recipe is kept.
"""

from __future__ import annotations

import math
import sys
import time

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

LINE_EVERY_S = 30.0  # how often a log file gets a progress line


class LogLinesProgressBar(ProgressBar):
    """``step 40/300 (13%) | loss 0.1234 | 2.10 it/s | ETA 0:02:05`` every ``every_s`` seconds, at the first and
    the last step, for logs that are not a terminal.

    Args:
        every_s: seconds between two lines (the first and the last step always get one).
    """

    def __init__(self, every_s: float | None = None):
        super().__init__()
        self.every_s = LINE_EVERY_S if every_s is None else float(every_s)
        self._enabled = True
        self._since = (0.0, 0)  # (time, step) of the last line
        self._printed_step = -1
        self._total: int | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer, pl_module) -> None:
        self._since, self._total = (time.monotonic(), trainer.global_step), _total_steps(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, total = trainer.global_step, self._total
        if step == self._printed_step:  # gradient accumulation: the step has not moved
            return
        first, last = self._printed_step < 0, total is not None and step >= total
        if first or last or time.monotonic() - self._since[0] >= self.every_s:
            self._line(trainer, pl_module, step, total)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._printed_step:  # an epoch bound or a stop ended the fit between two lines
            self._line(trainer, pl_module, trainer.global_step, self._total)

    def _line(self, trainer, pl_module, step: int, total: int | None) -> None:
        now = time.monotonic()
        rate = (step - self._since[1]) / max(now - self._since[0], 1e-9)
        self._since, self._printed_step = (now, step), step
        if not self._enabled:
            return
        parts = [f"step {step}/{total} ({100 * step / total:.0f}%)" if total else f"step {step}"]
        parts.append(f"epoch {trainer.current_epoch}")
        parts += [f"{k} {_number(v)}" for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"]
        if rate > 0:
            parts.append(_rate(rate))
            if total and step < total:
                parts.append(f"ETA {_clock((total - step) / rate)}")
        print(" | ".join(parts), flush=True)


class TerminalRichProgressBar(RichProgressBar):
    """Lightning's rich bar without ``v_num``, without "Epoch 0/-2" when only ``max_steps`` bounds the fit, and with
    s/it for slow steps where it would show "0.00it/s" (also shown before the first step is timed)."""

    def configure_columns(self, trainer) -> list:
        columns = super().configure_columns(trainer)
        return [_speed_column(c.style) if type(c).__name__ == "ProcessingSpeedColumn" else c for c in columns]

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        text = super()._get_train_description(current_epoch)
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs < 1:  # -1: no epoch bound; Lightning would show "/-2"
            text = text.replace(f"/{max_epochs - 1}", "", 1)
        return text


class TerminalTQDMProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar without ``v_num``."""

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def progress_bars(callbacks) -> list[ProgressBar]:
    """The progress bars among a recipe's callbacks (read before the Trainer adds its own to that same list)."""
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    return [c for c in callbacks if isinstance(c, ProgressBar)]


def readable_progress(trainer, recipe_bars: list[ProgressBar], stream=None) -> None:
    """Replace the bar Lightning added by default (not one of ``recipe_bars``) with ours."""
    bar = trainer.progress_bar_callback
    if bar is None or any(bar is c for c in recipe_bars) or type(bar) not in (RichProgressBar, TQDMProgressBar):
        return
    stream = sys.stdout if stream is None else stream
    if not stream.isatty():
        ours = LogLinesProgressBar()
    elif isinstance(bar, RichProgressBar):
        ours = TerminalRichProgressBar()
    else:
        ours = TerminalTQDMProgressBar()
    trainer.callbacks[trainer.callbacks.index(bar)] = ours


def _total_steps(trainer) -> int | None:
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return int(trainer.max_steps)
    total = trainer.estimated_stepping_batches  # epoch-bounded fits; inf when the loader has no length
    return int(total) if total is not None and math.isfinite(total) else None


def _speed_column(style):
    from rich.progress import ProgressColumn  # rich is optional: only Lightning's RichProgressBar needs it
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task) -> Text:
            return Text(_rate(task.speed) if task.speed else "", style=style)

    return Speed()


def _rate(steps_per_s: float) -> str:
    return f"{steps_per_s:.2f} it/s" if steps_per_s >= 1 else f"{1 / steps_per_s:.1f} s/it"


def _number(value) -> str:
    if hasattr(value, "item"):
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
