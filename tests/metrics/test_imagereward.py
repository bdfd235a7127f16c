"""ImageReward-v1.0 on transformers' BLIP against image-reward 1.5's own code, offline, on fabricated tiny weights.

tests/fixtures/imagereward_tiny.json holds rewards that image-reward 1.5's ``ImageReward.score`` (and its
tokenizer's input ids) gave, on CPU in fp32, with timm 0.6.13, fairscale 0.4.13, transformers 4.46.3 and torch
2.14.1 in a separate environment. Recipe: ``metric_factories.write_imagereward(DIR, seed=0)`` wrote
ImageReward.pt, med_config.json and a BERT vocab; upstream's ``ImageReward(med_config=...)`` was built with three
shims for the tiny size (its ``create_vit`` returning ``VisionTransformer(img_size=32, patch_size=8,
embed_dim=128, depth=2, num_heads=2)``, ``MLP(32)`` for its hard-coded ``MLP(768)``, ``_transform(32)`` for its
``_transform(224)``), a folder named ``bert-base-uncased`` holding that vocab, and
``load_state_dict(torch.load(ImageReward.pt), strict=True)`` (all keys matched); then ``score(prompt, image)`` for
every pair of the fixture's prompts and of the PNGs below (uint8 from ``torch.randint`` with a Generator seeded
``images_seed``, one (H, W, 3) image per size in order). Ours matched it within 1.5e-6 (seeds 0 and 1).
"""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from priorswap.toolkit.errors import PriorswapError  # noqa: E402
from priorswap.toolkit.metrics.imagereward import ImageReward, build_imagereward  # noqa: E402

import metric_factories as mf  # noqa: E402
from repo_paths import FIXTURES  # noqa: E402

FIXTURE = os.path.join(FIXTURES, "imagereward_tiny.json")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return mf.write_imagereward(str(tmp_path_factory.mktemp("imagereward")), seed=0)


@pytest.fixture(scope="module")
def model(files):
    return ImageReward(files["weights"], files["config"], files["tokenizer"])


def fixture_images(fx: dict) -> list[torch.Tensor]:
    """The fixture's images as (1, 3, H, W) in [0, 1], drawn as the recipe drew them."""
    g = torch.Generator().manual_seed(fx["images_seed"])
    out = []
    for h, w in fx["image_sizes"]:
        a = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
        out.append(a.permute(2, 0, 1)[None].float() / 255)
    return out


def test_rewards_equal_image_rewards_own_code(model):
    with open(FIXTURE) as f:
        fx = json.load(f)
    prompts = fx["prompts"]
    ids = model.tokenizer(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    assert ids["input_ids"].tolist() == fx["input_ids"]  # the last prompt is cut to 35 tokens, as upstream's
    want = torch.tensor(fx["rewards"])
    got = torch.stack([model(x.expand(len(prompts), -1, -1, -1), prompts) for x in fixture_images(fx)])
    assert (got - want).abs().max() < 1e-5, (got - want).abs().max()
    assert want.std() > 0.3  # the fixture tells images and prompts apart


def test_released_layout_is_loaded_strictly(files, tmp_path):
    """Every key of upstream's state_dict() is read or knowingly skipped; a stray, missing or reshaped key fails."""
    state = torch.load(files["weights"], weights_only=True)
    assert set(state) == set(mf.imagereward_shapes(json.load(open(files["config"]))))
    trimmed = {k: v for k, v in state.items() if "_proj." not in k and not k.endswith("position_ids")}
    torch.save(trimmed, tmp_path / "trimmed.pt")  # the unused projections and buffer may be absent
    ImageReward(str(tmp_path / "trimmed.pt"), files["config"], files["tokenizer"])
    bad = {
        "stray": ({**state, "blip.itm_head.weight": torch.zeros(2, 32)}, "keys outside ImageReward's layout"),
        "missing": (
            {k: v for k, v in state.items() if k != "blip.text_encoder.encoder.layer.1.output.dense.bias"},
            "missing 'encoder.layer.1.output.dense.bias'",
        ),
        "vit": (
            {k: v for k, v in state.items() if k != "blip.visual_encoder.blocks.1.attn.qkv.weight"},
            "missing 'encoder.layers.1.self_attn.qkv.weight'",
        ),
        "shape": (
            {**state, "mlp.layers.4.weight": torch.zeros(64, 127)},
            "'4.weight' is (64, 127), expected (64, 128)",
        ),
        "positions": (
            {**state, "blip.text_encoder.embeddings.position_ids": torch.zeros(1, 40, dtype=torch.long)},
            "position_ids is not 0, 1, 2",
        ),
    }
    for name, (sd, message) in bad.items():
        torch.save(sd, tmp_path / f"{name}.pt")
        with pytest.raises(PriorswapError, match=message.replace("(", r"\(").replace(")", r"\)")):
            ImageReward(str(tmp_path / f"{name}.pt"), files["config"], files["tokenizer"])


def test_bad_files_are_one_line_errors(files, tmp_path):
    def error(weights=files["weights"], config=files["config"], tokenizer=files["tokenizer"]) -> str:
        with pytest.raises(PriorswapError) as e:
            build_imagereward(weights, config, tokenizer)
        assert "\n" not in str(e.value)
        return str(e.value)

    med = json.load(open(files["config"]))
    (tmp_path / "not_torch.pt").write_text("hello")
    (tmp_path / "no_cross.json").write_text(json.dumps({**med, "add_cross_attention": False}))
    (tmp_path / "no_heads.json").write_text(json.dumps({k: v for k, v in med.items() if k != "num_attention_heads"}))
    (tmp_path / "wide.json").write_text(json.dumps({**med, "hidden_size": 64, "num_attention_heads": 4}))
    (tmp_path / "short_vocab.json").write_text(json.dumps({**med, "vocab_size": med["vocab_size"] + 1}))
    missing = error(weights=str(tmp_path / "nope.pt"))
    assert "--imagereward-weights" in missing and "hf download THUDM/ImageReward" in missing
    assert "could not be read" in error(weights=str(tmp_path / "not_torch.pt"))
    assert "--imagereward-config" in error(config=str(tmp_path / "nope.json"))
    assert "not a BLIP med_config.json" in error(config=files["weights"])
    assert "num_attention_heads" in error(config=str(tmp_path / "no_heads.json"))
    assert "add_cross_attention" in error(config=str(tmp_path / "no_cross.json"))
    assert "of another shape" in error(config=str(tmp_path / "wide.json"))
    assert "tokens with [DEC] and [ENC]" in error(config=str(tmp_path / "short_vocab.json"))
    assert "--imagereward-tokenizer" in error(tokenizer=str(tmp_path / "no_tokenizer"))
    os.makedirs(tmp_path / "empty")  # transformers 5 makes a tokenizer of the special tokens alone from nothing
    assert "has no vocabulary" in error(tokenizer=str(tmp_path / "empty"))


def test_config_defaults_to_the_one_beside_the_weights_and_the_hub_is_named_offline(files, tmp_path):
    assert isinstance(build_imagereward(files["weights"], None, files["tokenizer"]), ImageReward)
    os.makedirs(tmp_path / "alone")
    alone = tmp_path / "alone" / "ImageReward.pt"
    alone.write_bytes(open(files["weights"], "rb").read())
    for weights in (None, str(alone)):  # the weights, then the config, from an unreachable hub
        with pytest.raises(PriorswapError, match="THUDM/ImageReward") as e:
            build_imagereward(weights, None, files["tokenizer"])
        assert "\n" not in str(e.value) and "hf download THUDM/ImageReward" in str(e.value)


def test_rewards_do_not_depend_on_the_batch(model):
    """Padding to 35 tokens and a per-image resize: a batch scores as its items one by one."""
    x = fixture_images(json.load(open(FIXTURE)))[1].expand(3, -1, -1, -1).clone()
    x[1] = x[1].flip(-1)
    prompts = ["a cat", "a red car in the snowy field", "a dog"]
    together = model(x, prompts)
    alone = torch.cat([model(x[i : i + 1], prompts[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)
