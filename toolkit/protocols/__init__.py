"""The paper's evaluation protocols for the UNet fine-tunes (Tables 1, 2 and 5): vanilla CFG against each prior.

    from priorswap.toolkit.protocols import ProtocolRun, evaluate_protocol
    evaluate_protocol(ProtocolRun(kind="zero123", model="kxic/zero123-xl", data="gso_renders/", output_dir="out",
                                  priors=["sd14=CompVis/stable-diffusion-v1-4"], lpips_weights="alexnet-owt-7be5be79.pth"))

- ``items``: what is read (manifests, rendered-view folders, image folders; Zero-1-to-3 relative cameras);
- ``conditions``: items -> each model's batched conditions;
- ``generate``: resumable, paired-seed sampling into ``<out>/samples``;
- ``score``: the metrics and the paper-style table;
- ``runner``: the order of work (every check before the first sample).
"""

from .settings import ProtocolRun

__all__ = ["Item", "ProtocolRun", "evaluate_protocol", "read_items", "relative_pose"]


def __getattr__(name: str):  # the heavy parts load on first use, so ``priorswap eval --help`` stays instant
    if name == "evaluate_protocol":
        from .runner import evaluate_protocol

        return evaluate_protocol
    if name in ("Item", "read_items", "relative_pose"):
        from . import items

        return getattr(items, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
