"""The prompt callback across two real processes (DDP on CPU, gloo): the same rows, metrics and grids as one process.

Three prompts, one sample each, split over two ranks (2 + 1) and a reference folder of five images (3 + 2): uneven
blocks on both sides of every gather. lr = 0, so both runs evaluate identical weights (DDP trains on a larger global
batch, which would otherwise change them).
"""

import io
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from priorswap.callbacks import T2IPriorSwapEval
from priorswap.data.caption_sources import CaptionedFolderDataModule
from priorswap.toolkit.training.t2i_export import T2ILoRA
from priorswap.toolkit.training.t2i_module import T2IFineTune
from priorswap.toolkit.unet.tiny import save_image, save_sd

from metric_factories import tiny_conv_features, write_tiny_clip
from t2i_factories import randomize_lora

PROMPTS = ["a red cat", "two dogs", "blue sky"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2iddp")
    images = root / "imgs"
    images.mkdir()
    with open(images / "metadata.jsonl", "w") as f:
        for i in range(5):
            save_image(str(images / f"{i}.png"), (40, 32), seed=i)
            f.write(json.dumps({"file_name": f"{i}.png", "text": PROMPTS[i % 3]}) + "\n")
    write_tiny_clip(str(root / "clip"))
    return save_sd(str(root / "sd")), str(images), str(root / "clip")


def run(tmp, setup, devices: int) -> tuple[dict, dict]:
    base, images, clip = setup
    cb = T2IPriorSwapEval(
        prompts=PROMPTS, samples_per_prompt=1, steps=2, batch_size=2, seed=3, every_n_steps=None,
        reference=images, extractor=tiny_conv_features(), clip_model=clip, stats_cache=None,
        output=str(tmp / "t2i_eval.jsonl"),
    )  # fmt: skip
    module = T2IFineTune(base, lora=T2ILoRA(rank=2), lr=0.0, ema_decay=0.5, export_on_fit_end=False)
    # peft starts B at zero (the LoRA is the identity) and lr = 0 keeps it there: give the live and EMA adapters the
    # same weights, so the free prior really differs from vanilla
    randomize_lora(module.net)
    randomize_lora(module.ema.module["net"])
    dm = CaptionedFolderDataModule(images, resolution=32, center_crop=True, batch_size=1, num_workers=0)
    trainer = L.Trainer(
        max_steps=1, accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
        logger=TensorBoardLogger(str(tmp / "tb"), name="run", version="v"), callbacks=[cb],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        use_distributed_sampler=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, dm)
    rows = [json.loads(line) for line in open(tmp / "t2i_eval.jsonl")]
    assert len(rows) == 1 and rows[0]["step"] == 1
    events = EventAccumulator(str(tmp / "tb" / "run" / "v"), size_guidance={"images": 0})
    events.Reload()
    grids = {}
    for tag in events.Tags()["images"]:
        with Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string)) as image:
            grids[tag] = np.asarray(image.convert("RGB"), dtype=np.int32)
    return rows[0], grids


def test_two_processes_give_one_process_rows_metrics_and_grids(tmp_path, setup):
    one, one_grids = run(tmp_path / "one", setup, 1)
    two, two_grids = run(tmp_path / "two", setup, 2)
    metrics = [k for k in one if k.startswith(("fd_", "clip_score_"))]
    assert {"fd_vanilla", "fd_swapped", "clip_score_vanilla", "clip_score_swapped"} <= set(metrics)
    for key in metrics:
        assert np.isfinite(one[key]), key
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-5), key
    assert one["fd_vanilla"] != one["fd_swapped"]  # the free prior really changes the samples
    # one grid per prompt, each holding every sample of that prompt, whichever rank drew it
    assert len(one_grids) == len(PROMPTS) and one_grids.keys() == two_grids.keys()
    assert all(any(p in tag for tag in one_grids) for p in PROMPTS)
    for tag, grid in one_grids.items():
        # the same pictures; a float summed in another order may move a pixel across a rounding edge
        assert two_grids[tag].shape == grid.shape and np.abs(two_grids[tag] - grid).max() <= 1, tag
