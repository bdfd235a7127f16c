"""``priorswap bench sample --t2i``: one guided prediction of an SDXL-architecture and an SD3-architecture LoRA,
vanilla CFG against its free prior (``--prior base``), through the same hook ``sample t2i`` installs.

The networks are random, built at the real channel widths with fewer transformer blocks, so a CPU can run them:
- SDXL UNet: SDXL's config (channels 320/640/1280, 2 ResNets per level, 2048-wide cross-attention over 77 tokens,
  text_time conditioning) with 1 transformer block per attention level instead of 2 and 10 (641M of 2.6B
  parameters);
- SD3 MMDiT: SD3-medium's width (24 heads x 64 = 1536, 4096-wide joint attention over 333 text tokens, 2048-wide
  pooled projection, 16 latent channels, patch 2) with 2 of its 24 joint blocks (159M of 2.0B parameters).
The latent is ``--t2i-latent`` a side (default 32: a 256 px image, so a CPU finishes in minutes). LoRA: rank ``--lora-rank`` on to_q/k/v/out.
Vanilla is the denoiser on cat([uncond, cond]) (2n rows), as the pipeline calls it; the free prior is the same call
with ``SwapHook`` on (2n rows, the first n with the adapter off and the base's null), then CFG. Each cell runs in
its own subprocess: time alternates the two modes; memory is that mode's alone (peak RSS on the CPU, CUDA max
allocated on a GPU).
"""

from __future__ import annotations

import json
import sys

from .bench_cells import measure

ARCHS = ("sdxl", "sd3")
T2I_MODES = ("lora-vanilla", "lora-free")
SCALE = 5.0
DESCRIPTION = {
    "sdxl": "SDXL UNet, real widths, 1 transformer block per level (SDXL: 1/2/10)",
    "sd3": "SD3-medium MMDiT, real width 1536, 2 of 24 joint blocks",
}
SDXL_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}  # fmt: skip


def build(arch: str, dtype, rank: int):
    """(denoiser with a random LoRA, its Timeline, latent channels)."""
    import torch
    from peft import LoraConfig

    from ..t2i.timeline import Timeline

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in ``dtype``: no transient fp32 copy inflating the peak
    try:
        if arch == "sdxl":
            from diffusers import UNet2DConditionModel

            net = UNet2DConditionModel(
                sample_size=128, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280),
                layers_per_block=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
                transformer_layers_per_block=(1, 1, 1), cross_attention_dim=2048, use_linear_projection=True,
                addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816,
            )  # fmt: skip
            timeline, channels = Timeline.of(SDXL_SCHEDULER, flow=False), 4
        else:
            from diffusers import SD3Transformer2DModel

            net = SD3Transformer2DModel(
                sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=64,
                num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                pooled_projection_dim=2048, pos_embed_max_size=192,
            )  # fmt: skip
            timeline, channels = Timeline.of({"num_train_timesteps": 1000, "shift": 3.0}, flow=True), 16
    finally:
        torch.set_default_dtype(previous)
    net.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    return net.eval().requires_grad_(False), timeline, channels


def condition(arch: str, n: int, device, dtype) -> dict:
    """Random text conditions of n rows with the real shapes (SDXL: 77 tokens; SD3: 77 CLIP + 256 T5 tokens)."""
    import torch

    def r(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    if arch == "sdxl":
        ids = torch.tensor([[512.0, 512, 0, 0, 512, 512]], device=device, dtype=dtype).repeat(n, 1)
        return {
            "encoder_hidden_states": r(n, 77, 2048),
            "added_cond_kwargs": {"text_embeds": r(n, 1280), "time_ids": ids},
        }
    return {"encoder_hidden_states": r(n, 333, 4096), "pooled_projections": r(n, 2048)}


def guided_fns(arch: str, modes: list[str], batch: int, latent: int, device: str, dtype, rank: int):
    """mode -> a function running one guided prediction (n = ``batch`` images, 2n rows through the denoiser)."""
    import torch

    from ..t2i.swap import Prior, SwapHook, cat, hooked

    net, timeline, channels = build(arch, dtype, rank)
    net.to(device)
    n = batch
    x = torch.randn(2 * n, channels, latent, latent, device=device, dtype=dtype)
    t = torch.full((2 * n,), 500.0, device=device, dtype=dtype)  # mid-schedule (SD3: sigma 0.5)
    call = {"timestep": t, **cat([condition(arch, n, device, dtype), condition(arch, n, device, dtype)], n)}
    key = "sample" if arch == "sdxl" else "hidden_states"
    hook = SwapHook(timeline, Prior(None, timeline, {n: condition(arch, n, device, dtype)}), 1.0, None)
    hook.n = n

    def cfg(out) -> torch.Tensor:
        u, c = out[0].chunk(2)
        return u + SCALE * (c - u)

    def vanilla():
        return cfg(net(**{key: x}, **call, return_dict=False))

    def free():
        with hooked(net, hook):
            return cfg(net(**{key: x}, **call, return_dict=False))

    return {m: {"lora-vanilla": vanilla, "lora-free": free}[m] for m in modes}


def cell(task: str, arch: str, batch: int, latent: int, repeats: int, device: str, dtype: str, rank: int) -> dict:
    """One subprocess: ``time`` alternates both modes (load hits them alike); ``mem-<mode>`` builds that mode only."""
    from ..core.sampling import DTYPES

    modes = list(T2I_MODES) if task == "time" else [task.removeprefix("mem-")]
    fns = guided_fns(arch, modes, batch, latent, device, DTYPES[dtype], rank)
    return {"task": task, **measure(task, fns, repeats, device)}


def rows(args, worker) -> list[dict]:
    """The table rows of ``bench sample --t2i``: per architecture and batch, each mode against lora-vanilla."""
    out = []
    for arch in args.t2i_archs:
        for batch in args.batch_sizes:
            job = [
                arch,
                str(batch),
                str(args.t2i_latent),
                str(args.repeats),
                args.device,
                args.dtype,
                str(args.lora_rank),
            ]
            timing = worker(["time", *job])
            mem = {m: worker([f"mem-{m}", *job])["peak_mb"] for m in T2I_MODES}
            for m in T2I_MODES:
                out.append({
                    "arch": arch, "batch": batch, "mode": m, "s": timing[f"{m}_s"],
                    "time_ratio": timing[f"{m}_s"] / timing["lora-vanilla_s"], "peak_mb": mem[m],
                    "memory_ratio": mem[m] / mem["lora-vanilla"],
                })  # fmt: skip
    return out


def print_rows(out: list[dict], args, device: str) -> None:
    mem_name = "peak CUDA MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print(
        f"one guided prediction (2n rows), random LoRA rank {args.lora_rank}, {args.t2i_latent}x{args.t2i_latent} "
        f"latent, {args.dtype}, {device}, median of {args.repeats}; ratios to lora-vanilla"
    )
    for arch in args.t2i_archs:
        print(f"{arch}: {DESCRIPTION[arch]}")
    print(f"| model | batch | mode | s | time ratio | {mem_name} | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in out:
        print(
            f"| {r['arch']} | {r['batch']} | {r['mode']} | {r['s']:.3f} | {r['time_ratio']:.2f} | "
            f"{r['peak_mb']:.0f} | {r['memory_ratio']:.2f} |"
        )


if __name__ == "__main__":  # worker: python -m priorswap.toolkit.commands.bench_t2i TASK ARCH BATCH LATENT REPEATS ...
    task, arch, batch, latent, repeats, device, dtype, rank = sys.argv[1:9]
    print(json.dumps(cell(task, arch, int(batch), int(latent), int(repeats), device, dtype, int(rank))))
