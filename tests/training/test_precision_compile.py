"""The paper recipe's bf16-mixed precision and the ``model.compile`` switch, on a tiny DiT on CPU."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from priorswap.data import Food101DataModule

from fakedata import make_food101
from trainers import Kill, tiny_module, trainer


@pytest.fixture(scope="module")
def food(tmp_path_factory):
    return make_food101(str(tmp_path_factory.mktemp("food")), classes=3, per_class=8)


def dm(food):
    return Food101DataModule(root=food, resolution=16, batch_size=8, num_workers=0)  # 3 batches per epoch


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_bf16_mixed_fit_trains_and_resumes_exactly(tmp_path, food):
    L.seed_everything(0)
    full = tiny_module()
    before = {k: v.clone() for k, v in full.transformer.state_dict().items()}
    dtypes = set()
    full.transformer.register_forward_hook(lambda mod, args, out: dtypes.add(out.sample.dtype))
    t = trainer(tmp_path / "a", 5, precision="bf16-mixed")
    t.fit(full, dm(food))
    assert full.global_step == 5 and dtypes == {torch.bfloat16}  # the transformer really ran under bf16 autocast
    # weights and optimiser state stay fp32 (autocast only lowers the matmuls), and they moved
    assert all(p.dtype == torch.float32 for p in full.transformer.parameters())
    moved = [k for k, v in full.transformer.state_dict().items() if not torch.equal(v, before[k])]
    assert len(moved) > len(before) // 2

    L.seed_everything(0)
    part = tiny_module()
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "b"), every_n_train_steps=2, save_last=True)
    with pytest.raises(RuntimeError, match="simulated kill"):
        trainer(tmp_path / "b", 5, precision="bf16-mixed", callbacks=[ckpt, Kill(3)]).fit(part, dm(food))
    L.seed_everything(99)  # a resumed run must not depend on the global RNG
    resumed = tiny_module()
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "b"), every_n_train_steps=2, save_last=True)
    t = trainer(tmp_path / "b", 5, precision="bf16-mixed", callbacks=[ckpt])
    t.fit(resumed, dm(food), ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert resumed.global_step == 5
    # exact: CPU autocast is deterministic and the noise, timesteps and dropout come from per-step generators
    for (k, a), b in zip(full.transformer.state_dict().items(), resumed.transformer.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(full.ema.module.state_dict().values(), resumed.ema.module.state_dict().values()):
        assert torch.equal(a, b)


def _losses(food, tmp_path, compile: bool) -> list[float]:
    L.seed_everything(0)
    model = tiny_module(compile=compile)
    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(float(outputs["loss"]))

    trainer(tmp_path, 2, callbacks=[Record()]).fit(model, dm(food))
    return seen, model


def test_compile_gives_the_eager_loss(tmp_path, food):
    eager, _ = _losses(food, tmp_path / "eager", compile=False)
    torch._dynamo.reset()
    compiled, model = _losses(food, tmp_path / "compiled", compile=True)
    assert model.transformer._compiled_call_impl is not None  # the switch really compiled the transformer
    # inductor fuses and reorders float32 reductions, so the sums differ in the last bits, not more
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert len(eager) == 2 and eager[0] != eager[1]
