"""Fabricated weights for the metric networks (the real files are downloads), shared by the metric tests.

Each writer saves random weights with the real file's keys and shapes, so tests go through the real loading code.
"""

from __future__ import annotations

import json
import math
import os
from unittest import mock

import torch
from torch import nn

TINY_VIT = "vit_tiny_patch16_224"  # a timm ViT standing in for DINOv2 ViT-L/14


def alexnet_weights(path: str) -> str:
    """Random torchvision AlexNet weights saved as the real LPIPS backbone file would be."""
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return str(path)


def inception_weights(path: str) -> str:
    """Random weights with the FID Inception's exact keys and shapes."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(0)
    with (
        mock.patch.object(fe, "load_state_dict_from_url", return_value={}),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", return_value=None),
    ):
        net = fe.FeatureExtractorInceptionV3("fabricated", ["2048"])
    for m in net.modules():  # keep activations O(1) through 90 layers, so features are not ~1e-8
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return str(path)


def tiny_vit_weights(path: str) -> str:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model(TINY_VIT, pretrained=False, num_classes=0)
    save_file(net.state_dict(), str(path))
    return str(path)


def write_tiny_clip(folder: str) -> dict:
    """A tiny random CLIP and an offline tokenizer (docs/method.md trap 12): printable ASCII vocab, empty merges."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    chars = [chr(i) for i in range(33, 127)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
    eos = vocab["<|endoftext|>"]
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=32,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=eos,
        pad_token_id=eos,
    )
    vision = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return vocab


# -- ImageReward ------------------------------------------------------------------------------------
# A tiny ImageReward in the released ImageReward.pt's layout (image-reward 1.5: ImageReward/ImageReward.py,
# models/BLIP/{vit,med,blip_pretrain}.py): a 2-block ViT 128 wide (2 heads of 64, patch 8, 32 px), a 2-layer BERT
# 32 wide with cross-attention, upstream's MLP (width -> 1024 -> 128 -> 64 -> 16 -> 1), BLIP's unused projections.
IR_VIT = dict(width=128, depth=2, patch=8, size=32)
IR_MED = dict(
    architectures=["BertModel"],
    attention_probs_dropout_prob=0.1,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    hidden_size=32,
    initializer_range=0.02,
    intermediate_size=37,
    layer_norm_eps=1e-12,
    max_position_embeddings=40,
    model_type="bert",
    num_attention_heads=4,
    num_hidden_layers=2,
    pad_token_id=0,
    type_vocab_size=2,
    vocab_size=0,  # set from the tokenizer: its words + [DEC] + [ENC]
    encoder_width=768,  # as in the released file; BLIP overrides it with the ViT's width
    add_cross_attention=True,
)
IR_WORDS = (
    "a the of and in on with into it turn make snowy field red car cat dog photo painting sky blue green "
    "house tree winter night"
).split()


def write_bert_vocab(folder: str) -> int:
    """An uncased BERT vocab.txt: specials, single characters, ## letters and a few words. Returns its size."""
    words = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    words += [w for w in IR_WORDS if w not in words]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(words) + "\n")
    return len(words)


def imagereward_shapes(med: dict, vit: dict = IR_VIT) -> dict[str, tuple[int, ...]]:
    """Every key of upstream's ImageReward.state_dict() with its shape, for the given BERT and ViT sizes."""
    w, p, n = vit["width"], vit["patch"], (vit["size"] // vit["patch"]) ** 2
    shapes: dict[str, tuple[int, ...]] = {}
    v = "blip.visual_encoder."
    shapes |= {v + "cls_token": (1, 1, w), v + "pos_embed": (1, n + 1, w)}
    shapes |= {v + "patch_embed.proj.weight": (w, 3, p, p), v + "patch_embed.proj.bias": (w,)}
    for i in range(vit["depth"]):
        b = f"{v}blocks.{i}."
        for name, shape in (("norm1", (w,)), ("norm2", (w,))):
            shapes |= {b + name + ".weight": shape, b + name + ".bias": shape}
        for name, out, inp in (
            ("attn.qkv", 3 * w, w),
            ("attn.proj", w, w),
            ("mlp.fc1", 4 * w, w),
            ("mlp.fc2", w, 4 * w),
        ):
            shapes |= {b + name + ".weight": (out, inp), b + name + ".bias": (out,)}
    shapes |= {v + "norm.weight": (w,), v + "norm.bias": (w,)}
    t, h, m = "blip.text_encoder.", med["hidden_size"], med["intermediate_size"]
    shapes[t + "embeddings.position_ids"] = (1, med["max_position_embeddings"])
    shapes[t + "embeddings.word_embeddings.weight"] = (med["vocab_size"], h)
    shapes[t + "embeddings.position_embeddings.weight"] = (med["max_position_embeddings"], h)
    shapes |= {t + "embeddings.LayerNorm.weight": (h,), t + "embeddings.LayerNorm.bias": (h,)}
    for i in range(med["num_hidden_layers"]):
        b = f"{t}encoder.layer.{i}."
        for att, kv in (("attention", h), ("crossattention", w)):
            for name, inp in (("query", h), ("key", kv), ("value", kv)):
                shapes |= {f"{b}{att}.self.{name}.weight": (h, inp), f"{b}{att}.self.{name}.bias": (h,)}
            shapes |= {f"{b}{att}.output.dense.weight": (h, h), f"{b}{att}.output.dense.bias": (h,)}
            shapes |= {f"{b}{att}.output.LayerNorm.weight": (h,), f"{b}{att}.output.LayerNorm.bias": (h,)}
        shapes |= {b + "intermediate.dense.weight": (m, h), b + "intermediate.dense.bias": (m,)}
        shapes |= {b + "output.dense.weight": (h, m), b + "output.dense.bias": (h,)}
        shapes |= {b + "output.LayerNorm.weight": (h,), b + "output.LayerNorm.bias": (h,)}
    shapes |= {"blip.vision_proj.weight": (256, w), "blip.vision_proj.bias": (256,)}
    shapes |= {"blip.text_proj.weight": (256, h), "blip.text_proj.bias": (256,)}
    dims = [h, 1024, 128, 64, 16, 1]
    for k, i in enumerate((0, 2, 4, 6, 7)):
        shapes |= {f"mlp.layers.{i}.weight": (dims[k + 1], dims[k]), f"mlp.layers.{i}.bias": (dims[k + 1],)}
    return shapes


def imagereward_state(med: dict, vit: dict = IR_VIT, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights for :func:`imagereward_shapes`, key by key in sorted order: norm gains 1 + 0.1 N,
    biases 0.1 N, embeddings 0.5 N, matrices N / sqrt(fan in); position ids 0, 1, 2, ...."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in sorted(imagereward_shapes(med, vit).items()):
        x = torch.randn(shape, generator=g)
        if key.endswith("position_ids"):
            x = torch.arange(shape[-1]).expand(shape).clone()
        elif ("norm" in key.lower()) and key.endswith("weight"):
            x = 1 + 0.1 * x
        elif key.endswith("bias"):
            x = 0.1 * x
        elif "embed" in key or key.endswith("cls_token"):
            x = 0.5 * x
        else:
            x = x / math.sqrt(math.prod(shape[1:]))
        state[key] = x
    return state


def write_imagereward(folder: str, seed: int = 0) -> dict[str, str]:
    """ImageReward.pt + med_config.json (the hub repo's layout) and a BERT tokenizer folder, all tiny."""
    os.makedirs(folder, exist_ok=True)
    tokenizer = os.path.join(folder, "bert")
    med = dict(IR_MED, vocab_size=write_bert_vocab(tokenizer) + 2)
    with open(os.path.join(folder, "med_config.json"), "w") as f:
        json.dump(med, f, indent=2)
    weights = os.path.join(folder, "ImageReward.pt")
    torch.save(imagereward_state(med, seed=seed), weights)
    return {"weights": weights, "config": os.path.join(folder, "med_config.json"), "tokenizer": tokenizer}


def tiny_conv_features():
    """A seeded 32-d conv feature network standing in for Inception/DINOv2 in the evaluation callbacks' tests."""
    from priorswap.toolkit.metrics import ModuleExtractor

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    return ModuleExtractor(net, 32, "tiny-conv")
