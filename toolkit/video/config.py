"""The architecture of a DynamiCrafter or VideoCrafter1 checkpoint, read from the upstream inference YAML.

Upstream builds every module from ``model.params`` of its YAML (``instantiate_from_config``); so does the converter
here: the UNet, VAE, Resampler and OpenCLIP sizes and names below come from that file, never from constants, so any
checkpoint upstream builds from a YAML converts (the released ones, and tiny ones made for tests). Only the targets
the released models use are accepted; anything else is refused in one line naming the key.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ..errors import PriorswapError

DC_MODEL = "lvdm.models.ddpm3d.LatentVisualDiffusion"  # DynamiCrafter (image + text to video)
VC_MODEL = "lvdm.models.ddpm3d.LatentDiffusion"  # VideoCrafter1 T2V
UNET = "lvdm.modules.networks.openaimodel3d.UNetModel"
VAE = "lvdm.models.autoencoder.AutoencoderKL"
TEXT = "lvdm.modules.encoders.condition.FrozenOpenCLIPEmbedder"
IMAGE = "lvdm.modules.encoders.condition.FrozenOpenCLIPImageEmbedderV2"
RESAMPLER = "lvdm.modules.encoders.resampler.Resampler"
SPACINGS = ("uniform", "uniform_trailing")  # upstream's DDIM grids (see ddim.py)
RELEASED = {  # package data: the released inference YAMLs' model sections (see configs/)
    "dynamicrafter": "dynamicrafter_256_v1.0.yaml",
    "videocrafter": "videocrafter1_t2v_512_v1.0.yaml",
}


@dataclass(frozen=True)
class UNet3DConfig:
    """``unet_config.params`` of either code base (DynamiCrafter's and VideoCrafter's ``openaimodel3d.UNetModel``).

    DynamiCrafter spells image attention ``image_cross_attention`` and frame stride ``fs_condition``; VideoCrafter
    ``use_image_attention`` and ``fps_cond``. Both map onto the same flags here."""

    in_channels: int
    out_channels: int
    model_channels: int
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_heads: int = -1
    num_head_channels: int = -1
    transformer_depth: int = 1
    temporal_transformer_depth: int = 1  # VideoCrafter's own key; DynamiCrafter uses transformer_depth
    context_dim: int | None = None
    use_linear: bool = False
    conv_resample: bool = True
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    temporal_conv: bool = False
    tempspatial_aware: bool = False
    temporal_attention: bool = True
    temporal_selfatt_only: bool = True
    use_relative_position: bool = True
    use_causal_attention: bool = False
    temporal_length: int | None = None
    addition_attention: bool = False
    image_cross_attention: bool = False
    image_cross_attention_scale_learnable: bool = False
    fs_condition: bool = False
    default_fs: int = 4

    @classmethod
    def from_yaml(cls, params: dict, flavour: str) -> UNet3DConfig:
        p = dict(params)
        for unused in ("dropout", "use_checkpoint", "use_fp16", "dims", "num_classes"):  # inference-irrelevant
            p.pop(unused, None)
        if flavour == "videocrafter":
            if p.pop("fps_cond", False):
                raise PriorswapError(
                    "this VideoCrafter UNet takes an fps input (fps_cond: true, as VideoCrafter2 and the 1024 model "
                    "do); only VideoCrafter1 T2V 512 v1.0, which has none, shares DynamiCrafter-256's latent space"
                )
            p["image_cross_attention"] = p.pop("use_image_attention", False)
            if p.get("tempspatial_aware"):
                raise PriorswapError("VideoCrafter's tempspatial_aware temporal convolution is not supported")
        else:
            p.setdefault("temporal_transformer_depth", p.get("transformer_depth", 1))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(p) - known)
        if unknown:
            raise PriorswapError(f"unet_config.params.{unknown[0]} is not a setting of the released UNets")
        for key, released in (
            ("temporal_selfatt_only", True),
            ("use_causal_attention", False),
            ("use_scale_shift_norm", False),
            ("resblock_updown", False),
            ("conv_resample", True),
        ):
            if key in p and bool(p[key]) != released:
                raise PriorswapError(
                    f"unet_config.params.{key}: {p[key]} is not supported (the released UNets use {released})"
                )
        p["attention_resolutions"] = tuple(p["attention_resolutions"])
        p["channel_mult"] = tuple(p.get("channel_mult", (1, 2, 4, 8)))
        return cls(**p)


@dataclass(frozen=True)
class OpenCLIPSpec:
    arch: str = "ViT-H-14"  # open_clip architecture name (upstream's default)
    layer: str = "penultimate"  # text encoder only: "last" or "penultimate"


@dataclass(frozen=True)
class VideoModelConfig:
    """``model.params`` of an upstream inference YAML, as far as sampling needs it."""

    flavour: str  # "dynamicrafter" or "videocrafter"
    unet: UNet3DConfig
    ddconfig: dict  # first_stage_config.params.ddconfig (see priorswap.toolkit.video.vae)
    text: OpenCLIPSpec
    image: OpenCLIPSpec | None  # DynamiCrafter's image embedder
    resampler: dict | None  # image_proj_stage_config.params (see priorswap.toolkit.video.resampler)
    scale_factor: float = 0.18215
    linear_start: float = 0.00085
    linear_end: float = 0.012
    timesteps: int = 1000
    image_size: tuple[int, int] = (32, 32)  # latent size the model was trained at
    uncond_type: str = "empty_seq"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> VideoModelConfig:
        d = dict(d)
        unet = dict(d.pop("unet"))
        unet["attention_resolutions"] = tuple(unet["attention_resolutions"])
        unet["channel_mult"] = tuple(unet["channel_mult"])
        image = d.pop("image")
        return cls(
            unet=UNet3DConfig(**unet),
            text=OpenCLIPSpec(**d.pop("text")),
            image=None if image is None else OpenCLIPSpec(**image),
            image_size=tuple(d.pop("image_size")),
            **d,
        )


def released_config_path(flavour: str) -> str:
    return os.path.join(os.path.dirname(__file__), "configs", RELEASED[flavour])


def read_config(path: str) -> VideoModelConfig:
    """Parse an upstream inference YAML (``model.target`` / ``model.params``)."""
    import yaml  # here: `priorswap sample --help` reads this file for its flags

    try:
        with open(os.path.expanduser(path)) as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise PriorswapError(f"--config {path!r} cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise PriorswapError(f"--config {path!r} is not valid YAML ({str(e).splitlines()[0]})") from None
    model = (doc or {}).get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or "params" not in model:
        raise PriorswapError(f"--config {path!r} has no model.params section; expected an upstream inference YAML")
    target, p = model.get("target"), model["params"]
    flavour = {DC_MODEL: "dynamicrafter", VC_MODEL: "videocrafter"}.get(target)
    if flavour is None:
        raise PriorswapError(f"--config {path!r}: model.target {target!r} is neither {DC_MODEL} nor {VC_MODEL}")
    want = "hybrid" if flavour == "dynamicrafter" else "crossattn"
    if p.get("conditioning_key") != want:
        raise PriorswapError(f"--config {path!r}: conditioning_key {p.get('conditioning_key')!r}, expected {want!r}")
    if p.get("parameterization", "eps") != "eps" or p.get("use_dynamic_rescale") or p.get("rescale_betas_zero_snr"):
        raise PriorswapError(
            f"--config {path!r} is a v-prediction / rescaled-latent model (as DynamiCrafter-512/1024 and "
            "VideoCrafter2 are); only the eps models with DynamiCrafter-256's latent space are supported"
        )

    def section(key: str, target: str, required: bool = True) -> dict | None:
        s = p.get(key)
        if s is None:
            if required:
                raise PriorswapError(f"--config {path!r} has no model.params.{key}")
            return None
        if s.get("target") != target:
            raise PriorswapError(f"--config {path!r}: {key}.target is {s.get('target')!r}, expected {target}")
        return dict(s.get("params") or {})

    unet = UNet3DConfig.from_yaml(section("unet_config", UNET), flavour)
    vae = section("first_stage_config", VAE)
    text = section("cond_stage_config", TEXT)
    image = section("img_cond_stage_config", IMAGE, required=flavour == "dynamicrafter")
    resampler = section("image_proj_stage_config", RESAMPLER, required=flavour == "dynamicrafter")
    if resampler is not None:
        resampler.pop("target", None)
    if vae.get("embed_dim", 4) != vae["ddconfig"].get("z_channels"):
        raise PriorswapError(f"--config {path!r}: the VAE's embed_dim and z_channels differ")
    size = p.get("image_size", [32, 32])
    size = (size, size) if isinstance(size, int) else tuple(size)
    return VideoModelConfig(
        flavour=flavour,
        unet=unet,
        ddconfig=dict(vae["ddconfig"]),
        text=OpenCLIPSpec(arch=text.get("arch", "ViT-H-14"), layer=text.get("layer", "last")),
        image=None if image is None else OpenCLIPSpec(arch=image.get("arch", "ViT-H-14"), layer="tokens"),
        resampler=resampler,
        scale_factor=float(p.get("scale_factor", 1.0)),
        linear_start=float(p.get("linear_start", 0.00085)),
        linear_end=float(p.get("linear_end", 0.012)),
        timesteps=int(p.get("timesteps", 1000)),
        image_size=size,
        uncond_type=str(p.get("uncond_type", "empty_seq")),
    )
