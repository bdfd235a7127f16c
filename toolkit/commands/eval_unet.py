"""``priorswap eval ip2p|zero123|vd``: the paper's evaluation protocols, vanilla CFG against each prior.

    priorswap eval zero123 --model kxic/zero123-xl --data gso_renders/ --prior sd14=CompVis/stable-diffusion-v1-4 \
        --prior sd21=stabilityai/stable-diffusion-2-1 --lpips-weights alexnet-owt-7be5be79.pth --output-dir out/z123

Writes out/eval.md (the paper-style table), eval.csv, items.csv (per sample) and samples/<method>/<setting>/.
A killed run resumes from the samples on disk; ``--shard K/N`` splits the sampling over N processes (GPUs), and
under ``torchrun`` or ``srun`` (no ``--shard``) each process samples its rank's share and rank 0 then scores.
The flags are the fields of :class:`~priorswap.toolkit.protocols.settings.ProtocolRun`.
"""

from __future__ import annotations

from ..argspec import Command
from ..paper import PAPER
from ..protocols.settings import ALLOWED, DEFAULT_METRICS, KINDS, ProtocolRun

DATA_HELP = {
    "ip2p": ".jsonl/.csv edit manifest: image, edit, input_caption, output_caption (EditEval-style)",
    "zero123": "folder of rendered objects (<object>/NNN.png + NNN.npy world-to-camera [R|t]) or a .jsonl/.csv "
    "manifest: image, target, polar, azimuth (degrees), radius",
    "vd": "folder of images (searched recursively; e.g. COCO val2014) or a .jsonl/.csv manifest with an image column",
}
SIZE_HELP = {
    "ip2p": "each input's own, rounded down",
    "zero123": str(PAPER["zero123"].size),
    "vd": "the UNet's sample size x 8",
}


def run(cfg: ProtocolRun) -> int:
    from ..launch import shard_then_score
    from ..protocols.runner import evaluate_protocol

    shard_then_score(cfg, evaluate_protocol)
    return 0


COMMANDS = {
    kind: Command(
        ProtocolRun,
        run,
        f"paper protocol for {PAPER[kind].model}: {', '.join(DEFAULT_METRICS[kind])}",
        kind=kind,
        context={
            "paper": PAPER[kind],
            "data_help": DATA_HELP[kind],
            "size_help": SIZE_HELP[kind],
            "allowed": ", ".join(ALLOWED[kind]),
            "metrics": " ".join(DEFAULT_METRICS[kind]),
        },
        fixed={"kind": kind},
    )
    for kind in KINDS
}
