"""ImageReward-v1.0 (Xu et al. 2023): a BLIP reward model trained on human preferences, rebuilt on transformers'
BLIP and fed the released ``ImageReward.pt`` (hub repo ``THUDM/ImageReward``) unchanged.

The ``image-reward`` package (1.5) pins timm==0.6.13 and fairscale==0.4.13, and its vendored BLIP text encoder
needs transformers 4.x internals, so it cannot live beside this project's pins. Its network is BLIP's ViT (pre-norm,
fused qkv, LayerNorm eps 1e-6, exact GELU) and BLIP's BERT with cross-attention to the image tokens in every layer:
exactly transformers' ``BlipVisionModel`` and ``BlipTextModel`` (built as a decoder for the cross-attention
layers, run bidirectionally), whose parameter names differ only in the ViT.

reward(image, prompt) = (MLP(BERT(prompt | ViT(image))[CLS]) - mean) / std, as ImageReward's ``score``
(ImageReward/ImageReward.py:103-137 in image-reward 1.5): the prompt padded to 35 BERT tokens, the image resized
(bicubic, shorter side) and centre-cropped to the ViT's size, CLIP-normalised. The paper's Table 5 reports the mean
reward of the edited images against the output captions.
"""

from __future__ import annotations

import json
import os

import torch
import torchvision.transforms.functional as TF
from huggingface_hub import hf_hub_download
from PIL import Image
from torch import Tensor, nn
from transformers import BertTokenizer, BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

from ..core.hub import cached, fetch_error, unreachable_reason
from ..errors import PriorswapError
from ..images import to_uint8
from .extractor import load_state_dict_file, require_file

IMAGEREWARD_REPO = "THUDM/ImageReward"
WEIGHTS_FILE = "ImageReward.pt"
CONFIG_FILE = "med_config.json"
TOKENIZER = "bert-base-uncased"
REWARD_MEAN, REWARD_STD = 0.16717362830052426, 1.0333394966054072  # ImageReward/ImageReward.py:80-81
MAX_TOKENS = 35  # ImageReward/ImageReward.py:110
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # ImageReward/ImageReward.py:36
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_DIM = 64  # BLIP's ViTs: base 768 wide with 12 heads, large 1024 with 16 (models/BLIP/blip.py:27-37)
VIT_EPS = 1e-6  # models/BLIP/vit.py:138
MLP_LAYERS = (0, 2, 4, 6, 7)  # the Linear layers of ImageReward's MLP, between its Dropouts (ImageReward.py:45-58)
VISION, TEXT, MLP = "blip.visual_encoder.", "blip.text_encoder.", "mlp.layers."
# Saved by upstream, unused by the reward: BLIP's contrastive projections and BERT's position-id buffer.
UNUSED = ("blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight", "blip.text_proj.bias")
POSITION_IDS = TEXT + "embeddings.position_ids"
HINT = (
    f"download {WEIGHTS_FILE} and {CONFIG_FILE} with `hf download {IMAGEREWARD_REPO} --local-dir DIR` and pass "
    f"--imagereward-weights DIR/{WEIGHTS_FILE}"
)


# -- the released checkpoint's names -> transformers' ----------------------------------------------
def _vision_name(key: str) -> str:
    """A ``blip.visual_encoder.*`` key (BLIP's timm-style ViT, models/BLIP/vit.py) as BlipVisionModel names it."""
    fixed = {
        "cls_token": "embeddings.class_embedding",
        "pos_embed": "embeddings.position_embedding",
        "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
        "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
        "norm.weight": "post_layernorm.weight",
        "norm.bias": "post_layernorm.bias",
    }
    if key in fixed:
        return fixed[key]
    parts = key.split(".")  # blocks.{i}.{norm1|attn.qkv|attn.proj|norm2|mlp.fc1|mlp.fc2}.{weight|bias}
    if parts[0] != "blocks" or len(parts) < 4:
        return "?" + key
    inner = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv"}
    inner |= {"attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    module = ".".join(parts[2:-1])
    return f"encoder.layers.{parts[1]}.{inner.get(module, '?' + module)}.{parts[-1]}"


def split_checkpoint(state: dict[str, Tensor], path: str) -> tuple[dict, dict, dict]:
    """The vision, text and head state dicts of an ``ImageReward.pt`` in transformers' names. Keys outside the
    official layout are an error here; the strict loads below catch missing ones and wrong shapes."""
    vision, text, head, stray = {}, {}, {}, []
    for key, value in state.items():
        if key.startswith(VISION):
            vision[_vision_name(key[len(VISION) :])] = value
        elif key == POSITION_IDS:
            if not torch.equal(value.flatten().long(), torch.arange(value.numel())):
                raise PriorswapError(f"{path!r}: {key} is not 0, 1, 2, ...; not an {WEIGHTS_FILE}")
        elif key.startswith(TEXT):
            text[key[len(TEXT) :]] = value
        elif key.startswith(MLP) and key[len(MLP) :].split(".")[0] in {str(i) for i in MLP_LAYERS}:
            head[key[len(MLP) :]] = value
        elif key not in UNUSED:
            stray.append(key)
    if stray:
        raise PriorswapError(
            f"{path!r} has {len(stray)} keys outside ImageReward's layout (e.g. {stray[0]!r}); expected "
            f"{WEIGHTS_FILE} ({VISION}*, {TEXT}*, {MLP}*); {HINT}"
        )
    return vision, text, head


# -- configs -----------------------------------------------------------------------------------------
def vision_config(vision: dict[str, Tensor], path: str):
    """BLIP's ViT read off the checkpoint's shapes (upstream hard-codes ViT-L/16 at 224, blip.py:33-37)."""
    try:
        width = vision["embeddings.class_embedding"].shape[-1]
        patch = vision["embeddings.patch_embedding.weight"].shape[-1]
        grid = round((vision["embeddings.position_embedding"].shape[1] - 1) ** 0.5)
        mlp = vision["encoder.layers.0.mlp.fc1.weight"].shape[0]
    except (KeyError, IndexError):
        raise PriorswapError(f"{path!r} has no complete {VISION}* ViT; not an {WEIGHTS_FILE}; {HINT}") from None
    depth = len({k.split(".")[2] for k in vision if k.startswith("encoder.layers.")})
    if width % HEAD_DIM:
        raise PriorswapError(f"{path!r}: ViT width {width} is not a multiple of {HEAD_DIM}; not an {WEIGHTS_FILE}")
    return BlipVisionConfig(
        hidden_size=width,
        intermediate_size=mlp,
        num_hidden_layers=depth,
        num_attention_heads=width // HEAD_DIM,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act="gelu",
        layer_norm_eps=VIT_EPS,
    )


def text_config(path: str, encoder_width: int):
    """BLIP's BERT from ``med_config.json`` (read as models/BLIP/blip_pretrain.py:35-37 does: cross-attention width
    is the ViT's). transformers' BLIP text model has cross-attention layers when built as a decoder."""
    try:
        with open(path) as f:
            med = json.load(f)
        if not isinstance(med, dict):
            raise ValueError("not a JSON object")
        keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        shape = {k: int(med[k]) for k in keys}
        extra = dict(
            max_position_embeddings=int(med.get("max_position_embeddings", 512)),
            hidden_act=str(med.get("hidden_act", "gelu")),
            layer_norm_eps=float(med.get("layer_norm_eps", 1e-12)),
            pad_token_id=int(med.get("pad_token_id", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PriorswapError(
            f"ImageReward config {path!r} is not a BLIP med_config.json ({type(e).__name__}: {str(e)[:80]}); {HINT}"
        ) from None
    if not med.get("add_cross_attention", False):
        raise PriorswapError(f"ImageReward config {path!r} has no add_cross_attention: true; not ImageReward's")
    if extra["max_position_embeddings"] < MAX_TOKENS:
        raise PriorswapError(f"ImageReward config {path!r}: max_position_embeddings is below {MAX_TOKENS}")
    return BlipTextConfig(
        **shape,
        **extra,
        encoder_hidden_size=encoder_width,
        is_decoder=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        bos_token_id=None,
        eos_token_id=None,
        sep_token_id=None,
    )


def load_tokenizer(ref: str, vocab_size: int):
    """BERT's uncased tokenizer with BLIP's two added tokens, [DEC] and [ENC] (models/BLIP/blip.py:16-20)."""
    path = os.path.expanduser(ref)
    if (os.path.isabs(path) or ref.startswith(".")) and not os.path.isdir(path):
        raise PriorswapError(f"--imagereward-tokenizer {ref!r} is not a folder; pass {TOKENIZER}'s (with vocab.txt)")
    try:
        tok = BertTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise PriorswapError(
            f"ImageReward tokenizer {ref!r} cannot be loaded ({str(e).splitlines()[0][:120]}); pass a folder with "
            f"{TOKENIZER}'s vocab.txt as --imagereward-tokenizer"
        ) from None
    if len(tok.get_vocab()) <= len(set(tok.all_special_tokens)):  # transformers 5 makes an empty one if none is found
        raise PriorswapError(
            f"ImageReward tokenizer {ref!r} has no vocabulary (offline, and not in the hub cache?); pass a folder "
            f"with {TOKENIZER}'s vocab.txt as --imagereward-tokenizer"
        )
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    if len(tok) != vocab_size:
        raise PriorswapError(
            f"ImageReward tokenizer {ref!r} has {len(tok)} tokens with [DEC] and [ENC]; the text encoder has "
            f"{vocab_size} ({TOKENIZER}'s 30522 + 2)"
        )
    return tok


def _load(module: nn.Module, state: dict, what: str, path: str) -> None:
    """Strict load with a one-line error naming the first missing / unexpected key or wrong shape."""
    mine = module.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    wrong = [k for k in mine if k in state and state[k].shape != mine[k].shape]
    if missing or unexpected or wrong:
        first = (
            f"missing {missing[0]!r}"
            if missing
            else f"unexpected {unexpected[0]!r}"
            if unexpected
            else f"{wrong[0]!r} is {tuple(state[wrong[0]].shape)}, expected {tuple(mine[wrong[0]].shape)}"
        )
        raise PriorswapError(
            f"{path!r} does not fit ImageReward's {what} ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} of another shape; {first.replace('?', '')}); is --imagereward-config its med_config.json?"
        )
    module.load_state_dict(state, strict=True)


class RewardHead(nn.Module):
    """ImageReward's MLP on the [CLS] feature: five Linear layers, no activations (its Dropouts are off in eval);
    the widths after the first are read off the file, each layer taking the previous one's output."""

    def __init__(self, head: dict[str, Tensor], width: int, path: str):
        super().__init__()
        self.layers = nn.ModuleDict()
        for i in MLP_LAYERS:
            weight = head.get(f"{i}.weight")
            if weight is None or weight.ndim != 2:
                raise PriorswapError(f"{path!r} lacks a {MLP}{i}.weight matrix; not an {WEIGHTS_FILE}; {HINT}")
            out = 1 if i == MLP_LAYERS[-1] else weight.shape[0]
            self.layers[str(i)] = nn.Linear(width, out)
            width = out
        _load(self.layers, head, "reward MLP (mlp.layers)", path)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1) raw rewards of (B, width) [CLS] features."""
        for layer in self.layers.values():
            x = layer(x)
        return x


class ImageReward(nn.Module):
    """ImageReward-v1.0 from local files: ``ImageReward.pt``, its ``med_config.json``, a BERT tokenizer."""

    def __init__(self, weights: str, config: str, tokenizer: str = TOKENIZER):
        super().__init__()

        state = load_state_dict_file(weights)
        vision, text, head = split_checkpoint(state, weights)
        vcfg = vision_config(vision, weights)
        tcfg = text_config(config, vcfg.hidden_size)
        self.tokenizer = load_tokenizer(tokenizer, tcfg.vocab_size)
        self.vision = BlipVisionModel(vcfg)
        self.text = BlipTextModel(tcfg, add_pooling_layer=False)
        _load(self.vision, vision, "ViT (blip.visual_encoder)", weights)
        _load(self.text, text, "text encoder (blip.text_encoder)", weights)
        self.head = RewardHead(head, tcfg.hidden_size, weights)
        self.image_size = vcfg.image_size
        self.eval().requires_grad_(False)

    def pixels(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) ViT inputs from images (B, 3, H, W) in [0, 1], through uint8 pictures as upstream reads PIL
        images: bicubic resize of the shorter side to S, centre crop, CLIP normalisation (ImageReward.py:30-37)."""
        out = []
        for a in to_uint8(images):
            img = TF.resize(Image.fromarray(a), self.image_size, interpolation=TF.InterpolationMode.BICUBIC)
            out.append(TF.to_tensor(TF.center_crop(img, self.image_size)))
        return TF.normalize(torch.stack(out), CLIP_MEAN, CLIP_STD)

    @torch.no_grad()
    def forward(self, images: Tensor, prompts: list[str]) -> Tensor:
        """(B,) rewards of images (B, 3, H, W) in [0, 1] against their prompts (ImageReward.py:103-137)."""
        device = next(self.parameters()).device
        text = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        image_tokens = self.vision(pixel_values=self.pixels(images).to(device)).last_hidden_state
        hidden = self.text(
            input_ids=text["input_ids"].to(device),
            attention_mask=text["attention_mask"].to(device),
            encoder_hidden_states=image_tokens,
            encoder_attention_mask=torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=device),
            is_decoder=False,
        ).last_hidden_state
        reward = self.head(hidden[:, 0].float())[:, 0]
        return (reward - REWARD_MEAN) / REWARD_STD


# -- where the files come from -----------------------------------------------------------------------
def _hub_file(filename: str, flag: str) -> str:
    """``filename`` of THUDM/ImageReward from the hub (or its cache), or a one-line error naming ``flag``."""
    if not cached(IMAGEREWARD_REPO, filename):
        reason = unreachable_reason()
        if reason:
            raise PriorswapError(f"ImageReward {filename} is not in the local hub cache, and {reason}; {HINT}")
    try:
        return hf_hub_download(IMAGEREWARD_REPO, filename)
    except Exception as e:  # noqa: BLE001 - classified by fetch_error: offline, gated, missing
        raise PriorswapError(
            f"{fetch_error(IMAGEREWARD_REPO, 'ImageReward', filename, e)} ({flag} DIR/{filename})"
        ) from None


def build_imagereward(weights: str | None, config: str | None, tokenizer: str | None) -> ImageReward:
    """The metric's network from the ``--imagereward-*`` flags: the weights file (default: the hub's), its
    med_config.json (default: beside the weights, else the hub's) and the tokenizer (default bert-base-uncased)."""
    if weights is None:
        weights = _hub_file(WEIGHTS_FILE, "--imagereward-weights")
    weights = require_file(weights, "--imagereward-weights", HINT)
    if config is None:
        beside = os.path.join(os.path.dirname(weights), CONFIG_FILE)
        config = beside if os.path.isfile(beside) else _hub_file(CONFIG_FILE, "--imagereward-config")
    config = require_file(config, "--imagereward-config", HINT)
    return ImageReward(weights, config, tokenizer or TOKENIZER)
