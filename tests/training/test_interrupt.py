"""Stopping a fit and continuing it: SIGTERM / Ctrl-C save ``last.ckpt``, and every resume matches a run never stopped."""

import os
import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from priorswap.data import Food101DataModule

from fakedata import make_food101
from trainers import tiny_module, trainer

STEPS = 7  # 3 batches per epoch: steps 3 and 6 end an epoch


@pytest.fixture(scope="module")
def food(tmp_path_factory):
    return make_food101(str(tmp_path_factory.mktemp("food")), classes=3, per_class=8)


def data(food):
    return Food101DataModule(root=food, resolution=16, batch_size=8, num_workers=0)


class Signal(Callback):
    """Sends this process ``signum`` at the start of optimiser step ``at``, as a scheduler or a user would."""

    def __init__(self, at: int, signum: int):
        self.at, self.signum = at, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            os.kill(os.getpid(), self.signum)


def uninterrupted(tmp_path, food):
    L.seed_everything(0)
    full = tiny_module(warmup_steps=10)
    trainer(tmp_path / "full", STEPS).fit(full, data(food))
    return full


def resume(folder, food, ckpt_path):
    L.seed_everything(123)  # a resumed run must not depend on the global RNG
    model = tiny_module(warmup_steps=10)
    trainer(folder, STEPS, callbacks=[ModelCheckpoint(dirpath=str(folder), save_last=True)]).fit(
        model, data(food), ckpt_path=ckpt_path
    )
    return model


def assert_same(a, b):
    assert a.global_step == b.global_step == STEPS
    for (k, x), y in zip(a.transformer.state_dict().items(), b.transformer.state_dict().values()):
        assert torch.equal(x, y), k
    for x, y in zip(a.ema.module.state_dict().values(), b.ema.module.state_dict().values()):
        assert torch.equal(x, y)


@pytest.mark.parametrize(
    "signum,at", [(signal.SIGTERM, 2), (signal.SIGINT, 4)], ids=["sigterm-at-epoch-end", "ctrl-c-mid-epoch"]
)
def test_a_stopped_fit_saves_last_and_resumes_exactly(tmp_path, food, signum, at):
    full = uninterrupted(tmp_path, food)
    folder = tmp_path / "stopped"
    L.seed_everything(0)
    # checkpoints far apart: without the interruption's own save nothing would be there to resume
    cbs = [ModelCheckpoint(dirpath=str(folder), every_n_train_steps=100, save_last=True), Signal(at, signum)]
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException: the process ends after the save
        trainer(folder, STEPS, callbacks=cbs).fit(tiny_module(warmup_steps=10), data(food))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is plain again after fit
    state = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == at + 1  # the step in which the signal came was finished, then saved
    assert_same(full, resume(folder, food, "last"))


@pytest.mark.parametrize("first", [3, 5], ids=["ended-on-an-epoch-end", "ended-mid-epoch"])
def test_a_finished_run_continued_with_more_steps_matches_one_long_run(tmp_path, food, first):
    """max_steps raised after a run finished: the continuation uses the same data order as one long run."""
    full = uninterrupted(tmp_path, food)
    folder = tmp_path / "short"
    L.seed_everything(0)
    trainer(folder, first, callbacks=[ModelCheckpoint(dirpath=str(folder), save_last=True)]).fit(
        tiny_module(warmup_steps=10), data(food)
    )
    assert_same(full, resume(folder, food, str(folder / "last.ckpt")))
