"""DreamSim's ensemble embedding (dreamsim 0.2.1, the release ``pip install dreamsim`` gives and VBench's I2V
background imports unpinned), read from the folder ``dreamsim(pretrained=True, cache_dir=DIR)`` leaves behind:

- ``checkpoints/dino_vitbase16_pretrain.pth``: facebookresearch/dino's ViT-B/16, as torch.hub saves it (the file
  VBench's ``--dino-weights`` also names);
- ``clip_vitb16_pretrain.pth.tar`` / ``open_clip_vitb16_pretrain.pth.tar``: OpenAI CLIP and OpenCLIP ViT-B/16 in
  DINO's key names (``{"state_dict": ...}``, ln_pre stored as ``pos_drop``, the projection as ``proj``);
- ``ensemble_lora/``: the peft LoRA adapter on every ``qkv`` of the three branches (``adapter_config.json`` and
  ``adapter_model.safetensors`` or ``.bin``).

Each file is loaded strictly, without running code from the folder, into timm's ViT-B/16. DreamSim's own loading
(``feature_extraction/extractor.py`` 67-83) also reads ``dino_vitb16_pretrain.pth`` for DINO's projection head and
imports ``facebookresearch_dino_main/`` through torch.hub; neither takes part in the embedding, so neither is needed.
DreamSim 0.1.x's folders (one ``*_lora`` per branch, other checkpoints) are refused by name.
"""

from __future__ import annotations

import json
import os

import torch
from torch import Tensor, nn
from torchvision.transforms import functional as TF

from ..errors import PriorswapError
from ..metrics.extractor import load_exactly, load_state_dict_file

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # dreamsim/constants.py 2-3
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))  # constants.py 4-5
BRANCHES = (  # dreamsim/config.py 3-9: model_type, feat_type; model.py 178-196: each branch's statistics
    ("dino_vitb16", "checkpoints/dino_vitbase16_pretrain.pth", IMAGENET),
    ("clip_vitb16", "clip_vitb16_pretrain.pth.tar", OPENAI_CLIP),
    ("open_clip_vitb16", "open_clip_vitb16_pretrain.pth.tar", OPENAI_CLIP),
)
LAYOUT = (
    "checkpoints/dino_vitbase16_pretrain.pth, clip_vitb16_pretrain.pth.tar, open_clip_vitb16_pretrain.pth.tar "
    "and ensemble_lora/ (what dreamsim(pretrained=True, cache_dir=DIR) downloads)"
)
ADAPTERS = ("adapter_model.safetensors", "adapter_model.bin")  # peft's names, safetensors first as peft loads them


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation, x * sigmoid(1.702 x) (``load_clip_as_dino.py`` 6-9)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class LoRAQKV(nn.Module):
    """peft's LoRA on a ``qkv`` Linear, unmerged: base(x) + B(A(x)) * alpha / r (dropout is off in eval)."""

    def __init__(self, base: nn.Linear, a: Tensor, b: Tensor, scaling: float):
        super().__init__()
        self.base, self.scaling = base, scaling
        self.lora_A = nn.Linear(a.shape[1], a.shape[0], bias=False)
        self.lora_B = nn.Linear(b.shape[1], b.shape[0], bias=False)
        self.lora_A.weight.data.copy_(a)
        self.lora_B.weight.data.copy_(b)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


def _vit(state: dict, path: str, clip: bool, quick_gelu: bool) -> nn.Module:
    """timm's ViT/16 holding one branch's file, strictly: 12 blocks, 224 px, heads of 64; the width is read from the
    file (768 in DreamSim's release, where DreamSim builds ``vit_base``). The CLIP branches get ln_pre (DreamSim's
    ``pos_drop`` LayerNorm), LayerNorm eps 1e-5 and, for OpenAI's, QuickGELU (``load_clip_as_dino.py`` 21-32,
    ``load_open_clip_as_dino.py`` 16-21); DINO keeps eps 1e-6 and GELU (``vision_transformer.py`` ``vit_base``)."""
    import timm  # only the i2v_background dimension needs timm

    cls = state.get("cls_token")
    width = cls.shape[-1] if torch.is_tensor(cls) and cls.ndim == 3 else 0
    if width < 64 or width % 64:
        raise PriorswapError(
            f"DreamSim file {path!r} has no (1, 1, 768) cls_token; expected a ViT-B/16 in DINO's names"
        )
    vit = timm.create_model(
        "vit_base_patch16_224", pretrained=False, num_classes=0, embed_dim=width, num_heads=width // 64
    )
    if clip:
        vit.norm_pre = nn.LayerNorm(width)
        state = {("norm_pre." + k[len("pos_drop.") :] if k.startswith("pos_drop.") else k): v for k, v in state.items()}
    load_exactly(vit, state, f"DreamSim file {path!r} does not fit a ViT-B/16 in DINO's key names")
    if clip:
        for m in vit.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = 1e-5
    if quick_gelu:
        for blk in vit.blocks:
            blk.mlp.act = QuickGELU()
    return vit


def _branch(folder: str, index: int) -> tuple[nn.Module, Tensor | None]:
    """One branch's ViT and, for the CLIP branches, its (768, 512) projection (``load_clip_as_dino.py`` 22)."""
    name, rel, _ = BRANCHES[index]
    path = os.path.join(folder, rel)
    state = dict(load_state_dict_file(path))
    proj = None
    if name != "dino_vitb16":
        proj = state.pop("proj", None)
        if not torch.is_tensor(proj) or proj.ndim != 2:
            raise PriorswapError(f"DreamSim file {path!r} has no (768, 512) 'proj'; expected DreamSim's {name} file")
    vit = _vit(state, path, clip=proj is not None, quick_gelu=name == "clip_vitb16")
    if proj is not None and proj.shape[0] != vit.embed_dim:
        raise PriorswapError(f"DreamSim file {path!r}: 'proj' is {tuple(proj.shape)} for width {vit.embed_dim}")
    return vit, proj


def check_folder(folder: str) -> str:
    """``folder`` (user-expanded) if it is a folder holding every file the ensemble reads; else a one-line error
    naming the first one missing (DreamSim 0.1.x's per-branch adapters are named as such)."""
    folder = os.path.expanduser(str(folder))
    if not os.path.isdir(folder):
        raise PriorswapError(
            f"--dreamsim-weights {folder!r} is not a folder; expected DreamSim's cache folder: {LAYOUT}"
        )
    for name, rel, _ in BRANCHES:
        if not os.path.isfile(os.path.join(folder, rel)):
            raise PriorswapError(f"--dreamsim-weights {folder!r} has no {rel} ({name}); expected {LAYOUT}")
    lora_dir = os.path.join(folder, "ensemble_lora")
    if not os.path.isdir(lora_dir):
        old = [d for d in ("dino_vitb16_lora", "clip_vitb16_lora") if os.path.isdir(os.path.join(folder, d))]
        why = (
            "it holds DreamSim 0.1.x's per-branch adapters; run dreamsim>=0.2.1 once" if old else "peft's LoRA adapter"
        )
        raise PriorswapError(f"--dreamsim-weights {folder!r} has no ensemble_lora/ ({why}); expected {LAYOUT}")
    if not os.path.isfile(os.path.join(lora_dir, "adapter_config.json")):
        raise PriorswapError(f"{lora_dir!r} has no adapter_config.json (peft's LoRA settings)")
    if not any(os.path.isfile(os.path.join(lora_dir, n)) for n in ADAPTERS):
        raise PriorswapError(f"{lora_dir!r} has neither {' nor '.join(ADAPTERS)} (the LoRA weights peft saves)")
    return folder


def _lora(folder: str) -> tuple[dict, float]:
    """The ensemble adapter: its tensors (keys as peft saves them) and alpha / r, refusing options DreamSim's
    LoRA (``training/train.py`` 199-207: r, alpha, dropout, bias 'none', target 'qkv') never uses."""
    lora_dir = os.path.join(folder, "ensemble_lora")
    cfg_path = os.path.join(lora_dir, "adapter_config.json")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
        r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PriorswapError(f"{cfg_path!r} is not peft's LoRA adapter_config.json ({type(e).__name__}: {e})") from None
    bad = {
        "peft_type": cfg.get("peft_type", "LORA") != "LORA",
        "target_modules": sorted(cfg.get("target_modules") or []) != ["qkv"],
        "bias": cfg.get("bias", "none") != "none",
        "use_dora": bool(cfg.get("use_dora")),
        "use_rslora": bool(cfg.get("use_rslora")),
        "modules_to_save": bool(cfg.get("modules_to_save")),
        "rank_pattern": bool(cfg.get("rank_pattern")),
        "alpha_pattern": bool(cfg.get("alpha_pattern")),
        "fan_in_fan_out": bool(cfg.get("fan_in_fan_out")),
        "layers_to_transform": cfg.get("layers_to_transform") is not None,
    }
    if any(bad.values()):
        odd = ", ".join(f"{k}={cfg.get(k)!r}" for k, v in bad.items() if v)
        raise PriorswapError(f"{cfg_path!r} sets {odd}; DreamSim's ensemble LoRA is plain LoRA on 'qkv'")
    files = [os.path.join(lora_dir, n) for n in ADAPTERS if os.path.isfile(os.path.join(lora_dir, n))]
    return load_state_dict_file(files[0]), alpha / r


class DreamSimEnsemble(nn.Module):
    """DreamSim's ``ensemble``: ``forward`` (B, 3, 224, 224) in [0, 1] -> (B, 1792) concatenated features, DINO's
    CLS ‖ CLIP's embedding ‖ OpenCLIP's (``model.py`` 107-126 before ``normalize_embeds``); ``embed`` adds DreamSim's
    default ``normalize_embeds`` (what ``dreamsim(pretrained=True).embed`` returns)."""

    def __init__(self, folder: str):
        super().__init__()
        folder = check_folder(folder)
        lora, scaling = _lora(folder)
        vits, projs = [], []
        for i in range(len(BRANCHES)):
            vit, proj = _branch(folder, i)
            vits.append(vit)
            projs.append(proj)
        self.vits = nn.ModuleList(vits)
        self.clip_proj = nn.Parameter(projs[1], requires_grad=False)
        self.open_clip_proj = nn.Parameter(projs[2], requires_grad=False)
        self._apply_lora(lora, scaling, os.path.join(folder, "ensemble_lora"))
        self.eval().requires_grad_(False)

    def _apply_lora(self, lora: dict, scaling: float, where: str) -> None:
        """Every qkv of the 3 x 12 blocks gets its A and B; any key left over or missing is an error (peft itself
        loads adapters with ``strict=False``)."""
        left = dict(lora)
        for e, vit in enumerate(self.vits):
            for i, blk in enumerate(vit.blocks):
                key = f"base_model.model.extractor_list.{e}.model.blocks.{i}.attn.qkv"  # peft's name for DreamSim's qkv
                a, b = left.pop(f"{key}.lora_A.weight", None), left.pop(f"{key}.lora_B.weight", None)
                if a is None or b is None:
                    raise PriorswapError(
                        f"DreamSim adapter in {where!r} lacks {key}.lora_A/B; expected the ensemble's LoRA"
                    )
                w = vit.embed_dim
                if a.ndim != 2 or b.ndim != 2 or a.shape[1] != w or b.shape[0] != 3 * w or a.shape[0] != b.shape[1]:
                    raise PriorswapError(
                        f"DreamSim adapter in {where!r}: {key} has A {tuple(a.shape)}, B {tuple(b.shape)}"
                    )
                blk.attn.qkv = LoRAQKV(blk.attn.qkv, a.float(), b.float(), scaling)
        if left:
            raise PriorswapError(
                f"DreamSim adapter in {where!r} holds {len(left)} unexpected keys, e.g. {next(iter(left))!r}"
            )

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, 224, 224):
            raise PriorswapError(f"DreamSim takes (B, 3, 224, 224) images in [0, 1]; got {tuple(x.shape)}")
        out = []
        for (name, _, (mean, std)), vit in zip(BRANCHES, self.vits):
            h = TF.normalize(x, mean, std)  # model.py 175-176
            if name == "dino_vitb16":  # 'cls': block 11's output through a forward hook, before the final norm
                h = torch.cat([vit.cls_token.expand(len(h), -1, -1), vit.patch_embed(h)], dim=1) + vit.pos_embed
                out.append(vit.blocks(h)[:, 0])  # (model.py 160-167, extractor.py 206-267)
            else:  # 'embedding': ln_post(CLS) @ proj (model.py 169-170, extractor.py 171-174)
                proj = self.clip_proj if name == "clip_vitb16" else self.open_clip_proj
                out.append(vit.forward_features(h)[:, 0] @ proj)
        return torch.cat(out, dim=-1)

    def embed(self, x: Tensor) -> Tensor:
        return normalize_embeds(self(x))


def normalize_embeds(embed: Tensor) -> Tensor:
    """DreamSim 0.2.1's ``normalize_embedding`` (``model.py`` 311-313): subtract each row's mean, divide by its norm
    (0.1.x and 0.2.0 divided first; after VBench's own ``F.normalize`` both orders give the same unit vector)."""
    embed = embed - embed.mean(dim=1, keepdim=True)
    return embed / embed.norm(dim=1, keepdim=True)
