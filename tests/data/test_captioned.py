"""Captioned-image datamodules (HF dataset, metadata.jsonl folder, DreamBooth folder) on tiny PNGs in a temp dir."""

import json
import logging
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import datasets
import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from PIL import Image

from priorswap.data import (
    CaptionCrop,
    CaptionedFolderDataModule,
    DreamBoothDataModule,
    HFCaptionedDataModule,
    caption_key,
)
from priorswap.toolkit.errors import PriorswapError

KEYS = {"pixels", "caption", "original_size", "crop_top_left", "index", "id"}


def coded_png(path, width, height):
    """Red = 10 * column, green = 10 * row: a crop's pixels say where they came from."""
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([cols * 10, rows * 10, np.full_like(cols, 7)], -1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def folder(tmp_path, lines, n=4, size=(24, 16)):
    root = tmp_path / "folder"
    for i in range(n):
        coded_png(root / f"{i}.png", *size)
    (root / "metadata.jsonl").write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    )
    return str(root)


def plain(tmp_path, n=4):
    return folder(tmp_path, [{"file_name": f"{i}.png", "text": f"caption {i}"} for i in range(n)], n)


def hf_saved(tmp_path, images, captions, name="hf"):
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))})
    if all(isinstance(c, str) or c is None for c in captions):
        features["caption"] = datasets.Value("string")
    table = datasets.Dataset.from_dict({"image": images, "caption": captions}, features=features)
    out = tmp_path / name
    table.save_to_disk(str(out), num_shards=1)  # an empty table saved in 0 shards does not load back
    return str(out)


def first_batch(dm):
    dm.setup()
    return next(iter(dm.train_dataloader()))


def check_batch(batch, n, res):
    assert set(batch) == KEYS
    assert batch["pixels"].shape == (n, 3, res, res) and batch["pixels"].abs().max() <= 1
    assert batch["original_size"].shape == (n, 2) and batch["crop_top_left"].shape == (n, 2)
    assert batch["index"].shape == (n,) and len(batch["caption"]) == n == len(batch["id"])
    assert all(isinstance(c, str) for c in batch["caption"])
    assert batch["id"] == [caption_key(int(i), c) for i, c in zip(batch["index"], batch["caption"])]


def test_metadata_folder_loads(tmp_path):
    dm = CaptionedFolderDataModule(plain(tmp_path), resolution=16, batch_size=8, num_workers=0)
    batch = first_batch(dm)
    check_batch(batch, 4, 16)
    assert sorted(zip(batch["index"].tolist(), batch["caption"])) == [(i, f"caption {i}") for i in range(4)]
    assert batch["original_size"].tolist() == [[16, 24]] * 4


def test_metadata_in_a_subfolder_is_relative_to_its_own_folder(tmp_path):
    root = tmp_path / "root"
    coded_png(root / "train" / "imgs" / "a.png", 20, 20)
    (root / "train" / "metadata.jsonl").write_text(json.dumps({"file_name": "imgs/a.png", "prompt": "a cat"}))
    dm = CaptionedFolderDataModule(str(root), resolution=16, num_workers=0, caption_column="prompt")
    assert first_batch(dm)["caption"] == ["a cat"]
    assert dm.records()[0].image == os.path.join("train", "imgs", "a.png")


def test_hf_saved_dataset_loads_and_picks_one_caption_of_a_list_per_seeded_item(tmp_path):
    images = [str(coded_png(tmp_path / "img" / f"{i}.png", 16, 16)) for i in range(3)]
    captions = [["a", "b", "c", "d"], ["e"], ["f", "g"]]
    path = hf_saved(tmp_path, images, captions)
    dm = HFCaptionedDataModule(path, resolution=16, batch_size=3, num_workers=0, caption_column="caption")
    batch = first_batch(dm)
    check_batch(batch, 3, 16)
    for index, caption in zip(batch["index"].tolist(), batch["caption"]):
        assert caption in captions[index]
    picks = {tuple(b["caption"]) for b in _epochs(dm, 8)}
    assert len(picks) > 1  # each epoch draws again
    again = HFCaptionedDataModule(path, resolution=16, batch_size=3, num_workers=0, caption_column="caption")
    again.setup()
    assert [b["caption"] for b in _epochs(again, 8)] == [b["caption"] for b in _epochs(dm, 8)]  # seeded
    assert sorted(c for _, c in dm.caption_items()) == sorted(sum(captions, []))


def _epochs(dm, n):
    loader = dm.train_dataloader()
    out = []
    for epoch in range(n):
        loader.sampler.set_epoch(epoch)
        out += list(loader)
    return out


def test_local_imagefolder_through_load_dataset(tmp_path):
    dm = HFCaptionedDataModule(
        plain(tmp_path), resolution=16, batch_size=8, num_workers=0, cache_dir=str(tmp_path / "c")
    )
    batch = first_batch(dm)
    check_batch(batch, 4, 16)
    assert sorted(batch["caption"]) == [f"caption {i}" for i in range(4)]


def test_dreambooth_folder_loads_with_the_instance_prompt(tmp_path):
    root = plain(tmp_path)
    (tmp_path / "folder" / "notes.txt").write_text("not an image")
    dm = DreamBoothDataModule(root, "a photo of sks dog", resolution=16, batch_size=8, num_workers=0, random_flip=True)
    batch = first_batch(dm)
    check_batch(batch, 4, 16)
    assert batch["caption"] == ["a photo of sks dog"] * 4
    assert [r.image for r in dm.records()] == ["0.png", "1.png", "2.png", "3.png"]


def test_bad_images_and_captions_are_reported_once_and_skipped(tmp_path, caplog):
    lines = [{"file_name": f"{i}.png", "text": f"caption {i}"} for i in range(3)] + [
        {"file_name": "broken.png", "text": "decodes badly"},
        {"file_name": "3.png", "text": "   "},
        {"file_name": "3.png", "text": 42},
        {"file_name": "3.png"},
        {"file_name": "3.png", "text": ["ok", 5]},
        {"file_name": "gone.png", "text": "no file"},
        {"text": "no file name"},
    ]
    root = folder(tmp_path, lines)
    (tmp_path / "folder" / "broken.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        dm = CaptionedFolderDataModule(root, resolution=16, batch_size=16, num_workers=0)
        dm.setup()
        batches = [b for epoch in range(2) for b in _epoch(dm, epoch)]
    meta = os.path.join(root, "metadata.jsonl")
    assert dm.bad_items == [
        f"{meta} line 5: empty caption (allow_empty_captions: true keeps it)",
        f"{meta} line 6: caption is int, not a string",
        f"{meta} line 7: missing caption",
        f"{meta} line 8: caption list has caption is int, not a string",
        f"{meta} line 9: no image file gone.png",
        f"{meta} line 10: no file_name",
    ]
    caption_warnings = [r for r in caplog.records if "skipping 6 of 10 items" in r.getMessage()]
    assert len(caption_warnings) == 1 and "line 5" in caption_warnings[0].getMessage()
    assert all(sorted(b["caption"]) == ["caption 0", "caption 1", "caption 2"] for b in batches)
    assert dm.pop_skipped() == [os.path.join(root, "broken.png")] * 2  # once per epoch it was met
    kept = CaptionedFolderDataModule(root, resolution=16, num_workers=0, allow_empty_captions=True)
    assert len(kept.bad_items) == 5 and len(kept.split_indices()["train"]) == 5


def _epoch(dm, epoch):
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_hf_bad_rows_are_skipped_with_their_row(tmp_path, caplog):
    images = [str(coded_png(tmp_path / "img" / f"{i}.png", 16, 16)) for i in range(3)] + [None]
    path = hf_saved(tmp_path, images, ["fine", None, "", "no image"])
    with caplog.at_level(logging.WARNING):
        dm = HFCaptionedDataModule(path, resolution=16, batch_size=8, num_workers=0, caption_column="caption")
        batch = first_batch(dm)
    assert dm.bad_items == [
        f"{path}:train[1]: missing caption",
        f"{path}:train[2]: empty caption (allow_empty_captions: true keeps it)",
    ]
    assert batch["caption"] == ["fine"] and dm.pop_skipped() == [f"{path}:train[3]"]


def one_line(match, build):
    with pytest.raises(PriorswapError, match=match) as error:
        build()
    assert "\n" not in str(error.value)
    return str(error.value)


def test_one_line_errors_before_anything_loads(tmp_path):
    missing = str(tmp_path / "missing")
    one_line("does not exist", lambda: CaptionedFolderDataModule(missing))
    one_line("does not exist", lambda: HFCaptionedDataModule(missing))
    one_line("does not exist", lambda: DreamBoothDataModule(missing, "a sks dog"))
    (tmp_path / "bare").mkdir()
    one_line("has no metadata.jsonl", lambda: CaptionedFolderDataModule(str(tmp_path / "bare")))
    one_line("holds no images", lambda: DreamBoothDataModule(str(tmp_path / "bare"), "a sks dog"))
    root = plain(tmp_path)
    one_line("instance_prompt must be a non-empty string", lambda: DreamBoothDataModule(root, " "))
    message = one_line("has no column 'prompt'", lambda: CaptionedFolderDataModule(root, caption_column="prompt"))
    assert "['file_name', 'text']" in message
    (tmp_path / "folder" / "metadata.jsonl").write_text(
        '{"file_name": "0.png", "text": "a"}\n\n{"file_name": "1.png", text}\n'
    )
    one_line(r"metadata.jsonl line 3 is not JSON", lambda: CaptionedFolderDataModule(root))
    one_line(
        "load_dataset cannot read folder .*ArrowInvalid",
        lambda: HFCaptionedDataModule(root, cache_dir=str(tmp_path / "c")),
    )
    (tmp_path / "folder" / "metadata.jsonl").write_text("\n")
    one_line("holds no items", lambda: CaptionedFolderDataModule(root))
    (tmp_path / "folder" / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "text": ""}))
    one_line("all 1 items are unusable, e.g. .* empty caption", lambda: CaptionedFolderDataModule(root))

    images = [str(coded_png(tmp_path / "img" / "0.png", 16, 16))]
    path = hf_saved(tmp_path, images, ["x"])
    message = one_line("has no column 'text'", lambda: HFCaptionedDataModule(path))
    assert "['image', 'caption']" in message
    empty = hf_saved(tmp_path, [], [], name="empty")
    one_line("holds no items", lambda: HFCaptionedDataModule(empty, caption_column="caption"))
    dm = HFCaptionedDataModule(path, caption_column="caption", num_workers=0)
    one_line("set t2i_cache", lambda: dm.build_latent_cache(lambda x: x, "vae"))


def test_crop_and_flip_coordinates_match_a_hand_computation(tmp_path):
    image = Image.open(coded_png(tmp_path / "w.png", 24, 16))  # short side 16 = resolution: no resize
    red = lambda pixels: ((pixels[0] + 1) * 127.5).round().long()  # noqa: E731 - 10 * source column
    green = lambda pixels: ((pixels[1] + 1) * 127.5).round().long()  # noqa: E731

    pixels, size, corner = CaptionCrop(16, center_crop=True, random_flip=False)(image)
    assert size.tolist() == [16, 24] and corner.tolist() == [0, 4]  # (24 - 16) / 2 = 4 cut from the left
    assert red(pixels)[0].tolist() == [10 * c for c in range(4, 20)]
    assert green(pixels)[:, 0].tolist() == [10 * r for r in range(16)]

    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        pixels, size, (top, left) = CaptionCrop(16, center_crop=False, random_flip=True)(image)
        assert top == 0 and 0 <= left <= 8
        columns = red(pixels)[0].tolist()
        if columns == [10 * c for c in range(left, left + 16)]:
            seen.add(("plain", int(left)))
        else:  # flipped first: column j of the flipped image is source column 23 - j
            assert columns == [10 * (23 - c) for c in range(left, left + 16)]
            seen.add(("flipped", int(left)))
    assert {kind for kind, _ in seen} == {"plain", "flipped"} and len({left for _, left in seen}) > 3

    tall = Image.open(coded_png(tmp_path / "t.png", 8, 20))  # resized to 16 x 40; original (20, 8)
    pixels, size, corner = CaptionCrop(16, center_crop=True, random_flip=False)(tall)
    assert size.tolist() == [20, 8] and corner.tolist() == [12, 0]  # (40 - 16) / 2 = 12 cut from the top


def test_datamodule_records_the_crop_it_made(tmp_path):
    dm = CaptionedFolderDataModule(plain(tmp_path), resolution=16, batch_size=8, num_workers=0, random_flip=True)
    for batch in _epochs(dm, 3):
        for pixels, (top, left) in zip(batch["pixels"], batch["crop_top_left"].tolist()):
            columns = ((pixels[0, 0] + 1) * 127.5).round().long().tolist()
            assert top == 0
            assert columns in (
                [10 * c for c in range(left, left + 16)],
                [10 * (23 - c) for c in range(left, left + 16)],
            )


class Record(L.LightningModule):
    """Records what each optimiser step trained on."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.seen = []

    def training_step(self, batch, _):
        self.seen.append(
            (self.global_step, batch["index"].tolist(), batch["crop_top_left"].tolist(), batch["pixels"].sum().item())
        )
        return self.layer(batch["pixels"].mean((2, 3))).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Kill(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 4:
            raise RuntimeError("simulated kill")


def test_resume_continues_the_order_of_an_uninterrupted_run(tmp_path):
    root = plain(tmp_path, n=6)

    def fit(folder, callbacks=(), ckpt_path=None):
        model = Record()
        L.seed_everything(123 if ckpt_path else 0)  # a resumed run must not depend on the global RNG
        trainer = L.Trainer(
            max_steps=7,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
            default_root_dir=str(folder),
            callbacks=list(callbacks),
        )
        data = CaptionedFolderDataModule(root, resolution=16, batch_size=2, num_workers=0, random_flip=True)
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        return model.seen

    full = fit(tmp_path / "full")
    checkpoints = ModelCheckpoint(dirpath=str(tmp_path / "cut"), every_n_train_steps=1, save_last=True)
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit(tmp_path / "cut", [checkpoints, Kill()])
    saved = torch.load(tmp_path / "cut" / "last.ckpt", weights_only=False)["CaptionedFolderDataModule"]
    assert saved["split"]["train"] == [str(i) for i in range(6)] and len(saved["records_sha256"]) == 64
    resumed = fit(tmp_path / "cut", ckpt_path=str(tmp_path / "cut" / "last.ckpt"))
    assert [s for s, *_ in full] == list(range(7)) and [s for s, *_ in resumed] == [4, 5, 6]
    assert resumed == full[4:]  # same items, crops, flips (pixel sums) in the same order


# -- DreamBooth prior preservation ----------------------------------------------------------------------------
def dreambooth_with_class(tmp_path, n_instance=2, n_class=3, **kwargs):
    root = tmp_path / "instance"
    for i in range(n_instance):
        coded_png(root / f"{i}.png", 16, 16)
    classes = tmp_path / "class"
    for i in range(n_class):
        coded_png(classes / f"c{i}.png", 20, 16)
    kwargs = dict(resolution=16, batch_size=2, num_workers=0, center_crop=True, num_class_images=n_class, **kwargs)
    return DreamBoothDataModule(str(root), "a sks dog", class_data_dir=str(classes), class_prompt="a dog", **kwargs)


def test_prior_preservation_batches_hold_instance_then_class_examples(tmp_path, caplog):
    dm = dreambooth_with_class(tmp_path)
    dm.setup()
    batches = _epoch(dm, 0)
    assert [len(b["caption"]) for b in batches] == [4, 2]  # an epoch is max(2 instance, 3 class) pairs
    for b in batches:
        n = len(b["caption"]) // 2
        assert b["caption"] == ["a sks dog"] * n + ["a dog"] * n
        assert b["prior"].tolist() == [False] * n + [True] * n
        assert b["original_size"].tolist() == [[16, 16]] * n + [[16, 20]] * n and b["pixels"].shape[0] == 2 * n
    assert sorted(i for b in batches for i in b["index"][b["prior"]].tolist()) == [0, 1, 2]  # every class image
    # an unreadable class image is reported and skipped with its pair, so the halves stay the same size
    (tmp_path / "class" / "c1.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        rows = [b["prior"].tolist() for b in _epoch(dm, 1)]
    assert sorted(len(r) for r in rows) == [2, 2] and all(r == [False, True] for r in rows)
    assert dm.pop_skipped() == [str(tmp_path / "class" / "c1.png")]
    assert "skipping unreadable image" in caplog.text and "c1.png" in caplog.text
    held_out = dreambooth_with_class(tmp_path / "v", n_instance=4, val_fraction=0.5)
    held_out.setup()
    val = next(iter(held_out.val_dataloader()))
    assert "prior" not in val and val["caption"] == ["a sks dog"] * 2  # validation: instance images only


def test_prior_preservation_cache_holds_both_sets(tmp_path):
    dm = dreambooth_with_class(tmp_path, t2i_cache=str(tmp_path / "cache"))
    encoded = []

    def encode(batch):  # a stand-in for the fine-tune's encoder: the caption's length is its "embedding"
        encoded.append(list(batch["caption"]))
        mean = batch["pixels"][:, :, ::2, ::2]
        lengths = torch.tensor([float(len(c)) for c in batch["caption"]])
        return {"latent_mean": mean, "latent_std": mean.abs(), "prompt_embeds": lengths[:, None]}

    dm.setup()
    dirs = dm.build_t2i_cache(encode, "fake-encoder")
    assert set(dirs) == {"train", "val", "class"} and sum(encoded, []).count("a dog") == 3
    batch = next(iter(dm.train_dataloader()))
    assert batch["prior"].tolist() == [False, False, True, True]
    assert batch["prompt_embeds"][:, 0].tolist() == [len("a sks dog")] * 2 + [len("a dog")] * 2
    again = dreambooth_with_class(tmp_path, t2i_cache=str(tmp_path / "cache"))
    again.setup()
    encoded.clear()
    assert again.build_t2i_cache(encode, "fake-encoder") == dirs and encoded == []  # reused, not encoded again


def test_prior_preservation_refusals_are_one_line(tmp_path):
    root = str(coded_png(tmp_path / "inst" / "0.png", 16, 16).parent)
    few = tmp_path / "few"
    for i in range(3):
        coded_png(few / f"{i}.png", 16, 16)
    (few / "notes.txt").write_text("not an image")

    def build(**kwargs):
        return lambda: DreamBoothDataModule(root, "a sks dog", **{"class_prompt": "a dog", **kwargs})

    one_line(
        f"class_data_dir {few} holds 3 images, num_class_images needs 5: put 2 more images of 'a dog' there",
        build(class_data_dir=str(few), num_class_images=5),
    )
    one_line(
        f"class_data_dir {tmp_path / 'none'} does not exist, num_class_images needs 100",
        build(class_data_dir=str(tmp_path / "none")),
    )
    one_line("class_prompt 'a dog' is set but class_data_dir is not", build())
    one_line("needs class_prompt", build(class_data_dir=str(few), class_prompt=None, num_class_images=3))
    assert len(build(class_data_dir=str(few), num_class_images=2)().class_files) == 2  # the first 2, by name
