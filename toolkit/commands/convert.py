"""``priorswap convert dynamicrafter|videocrafter CKPT OUT``: a released pickled ``.ckpt`` as a safetensors folder.

The checkpoint is read with ``torch.load(weights_only=True)`` (no pickled code runs), every key is accounted for,
and the folder loads fast and without unpickling; it is what ``--model`` / ``--prior`` normally take.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg

FLAVOUR_HELP = {
    "dynamicrafter": "DynamiCrafter-256 (Doubiiu/DynamiCrafter model.ckpt)",
    "videocrafter": "VideoCrafter1 T2V 512 v1.0 (VideoCrafter/Text2Video-512 model.ckpt)",
}


@dataclass(kw_only=True)
class Convert:
    kind: str  # the sub-command
    ckpt: str = arg(positional=True, help="the released checkpoint (.ckpt)")
    out: str = arg(positional=True, help="output folder (written whole or not at all)")
    config: str | None = arg(None, help="the upstream inference YAML it was built from (default: the released one)")
    openclip_config: str | None = arg(
        None, help="an open_clip model-config JSON to register first, for an arch open_clip does not ship"
    )

    def check(self) -> None:
        checks.check_input_file("CKPT", self.ckpt)
        if self.config:
            checks.check_input_file("--config", self.config)
        if self.openclip_config:
            checks.check_input_file("--openclip-config", self.openclip_config)
        checks.check_output_dir("OUT", self.out)


def run(cfg: Convert) -> int:
    from ..video.loading import convert

    path = convert(cfg.ckpt, cfg.out, cfg.kind, cfg.config, cfg.openclip_config)
    print(f"converted {cfg.ckpt} to {path}")
    return 0


COMMANDS = {
    kind: Command(Convert, run, f"convert {text} to a safetensors folder", kind=kind, fixed={"kind": kind})
    for kind, text in FLAVOUR_HELP.items()
}
HELP = "convert a released video checkpoint (DynamiCrafter, VideoCrafter1) to a safe, fast-loading folder"
