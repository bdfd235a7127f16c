"""Tiny random diffusers models, saved with save_pretrained so tests load them through the real code."""

from __future__ import annotations

import json
import os

import torch

from priorswap.toolkit.dit.models import build_dit, dit_scheduler_config

SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def tiny_vae(scaling_factor: float = 0.18215, seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=8,
        scaling_factor=scaling_factor,
    )


def save_dit_pipeline(
    path: str,
    num_classes: int = 10,
    sample_size: int = 8,
    latent: bool = True,
    in_channels: int = 4,
    seed: int = 0,
    vae_scaling: float = 0.18215,
) -> str:
    """A tiny DiT pipeline folder (DDIM on DiT's linear schedule); pixel space when ``latent=False``."""
    from diffusers import DDIMScheduler, DiTPipeline

    torch.manual_seed(seed)
    tr = build_dit("tiny", num_classes=num_classes, in_channels=in_channels, sample_size=sample_size)
    with torch.no_grad():  # diffusers zero-inits the final layer; give it weights so outputs depend on labels
        for p in tr.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    sched = DDIMScheduler(**{**dit_scheduler_config(), "clip_sample": False})
    if latent:
        DiTPipeline(transformer=tr, vae=tiny_vae(vae_scaling, seed), scheduler=sched).save_pretrained(path)
    else:
        from priorswap.toolkit.training.export import export_pipeline

        export_pipeline(tr, None, dict(sched.config), [str(i) for i in range(num_classes)], path)
    return path


def offline_clip_tokenizer(folder: str):
    """A CLIPTokenizer from a vocab written here: printable ASCII (with and without </w>) + BOS/EOS."""
    from transformers import CLIPTokenizer

    os.makedirs(folder, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    vocab = {}
    for ch in chars:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), model_max_length=16)


def tiny_clip_text_encoder(hidden: int = 32, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=200,
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=16,
        bos_token_id=190,
        eos_token_id=191,
        pad_token_id=191,
    )
    return CLIPTextModel(cfg)


def save_sd_pipeline(path: str, prediction_type: str = "epsilon", vae_scaling: float = 0.18215, seed: int = 0) -> str:
    """A tiny StableDiffusionPipeline folder (SD's scaled_linear schedule) usable as a prior."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=4,
    )
    tok = offline_clip_tokenizer(os.path.join(path + "-tok"))
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=tiny_vae(vae_scaling, seed),
        text_encoder=tiny_clip_text_encoder(seed=seed),
        tokenizer=tok,
        scheduler=DDIMScheduler(**SD_SCHEDULE, prediction_type=prediction_type, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


T5_CORPUS = [
    "a photo of a cat",
    "an empty room at night",
    "make it snowy",
    "the quick brown fox jumps over the lazy dog",
]


def sentencepiece_t5_tokenizer(folder: str, max_length: int = 120):
    """A real ``T5Tokenizer`` from a sentencepiece model trained here on a few sentences.

    The folder holds what PixArt-alpha's ``tokenizer/`` holds: ``spiece.model`` and a ``tokenizer_config.json``
    (no ``tokenizer.json``), with T5's ids: pad 0, eos 1, unk 2, no BOS.
    """
    import sentencepiece as spm
    from transformers import T5Tokenizer

    os.makedirs(folder, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(T5_CORPUS * 50),
        model_prefix=os.path.join(folder, "spiece"),
        vocab_size=36,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        minloglevel=2,
        num_threads=1,
    )
    os.remove(os.path.join(folder, "spiece.vocab"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "tokenizer_class": "T5Tokenizer",
                "model_max_length": max_length,
                "extra_ids": 0,
                "eos_token": "</s>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
            },
            f,
        )
    return T5Tokenizer.from_pretrained(folder)


def tiny_pixart_transformer(seed: int = 0):
    """A 2-layer PixArt-alpha transformer (latent 4x8x8, learned sigma, 32-d captions), seeded."""
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        cross_attention_dim=16,
        caption_channels=32,
        norm_num_groups=8,
    )


def save_pixart_pipeline(path: str, seed: int = 0) -> str:
    """A tiny PixArt-alpha folder: small T5 encoder, real sentencepiece T5 tokenizer (``spiece.model`` only)."""
    from diffusers import DDIMScheduler, PixArtAlphaPipeline
    from transformers import T5Config, T5EncoderModel

    tr = tiny_pixart_transformer(seed)
    enc = T5EncoderModel(
        T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1)
    )
    tok = sentencepiece_t5_tokenizer(path + "-tok")
    pipe = PixArtAlphaPipeline(
        tokenizer=tok,
        text_encoder=enc,
        vae=tiny_vae(seed=seed),
        transformer=tr,
        scheduler=DDIMScheduler(**{**dit_scheduler_config(), "clip_sample": False}),
    )
    pipe.save_pretrained(path)
    import shutil

    for name in os.listdir(
        os.path.join(path, "tokenizer")
    ):  # keep PixArt's own layout: spiece.model, no tokenizer.json
        if name not in ("spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
            os.remove(os.path.join(path, "tokenizer", name))
    shutil.copy(os.path.join(path + "-tok", "spiece.model"), os.path.join(path, "tokenizer", "spiece.model"))
    shutil.copy(
        os.path.join(path + "-tok", "tokenizer_config.json"), os.path.join(path, "tokenizer", "tokenizer_config.json")
    )
    return path
