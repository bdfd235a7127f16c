"""Fabricated weights for the metric networks (the real files are downloads), shared by the metric tests.

Each writer saves random weights with the real file's keys and shapes, so tests go through the real loading code.
"""

from __future__ import annotations

import json
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
