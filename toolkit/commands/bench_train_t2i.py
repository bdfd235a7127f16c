"""``priorswap bench train --family sd``: the text-to-image row of ``bench train``.

The same comparison as the DiT rows: ``T2IFineTune`` under a Lightning Trainer against a plain loop (loss, backward,
AdamW step, EMA update) calling the same module's loss on the same batches, with captions encoded every step or read
from the latent + caption cache. The model is the tiny random SD pipeline of ``priorswap.toolkit.unet.tiny`` (a
2-level UNet and VAE, 2-layer CLIP), so the figure is an upper bound on Lightning's share: a real UNet's step is
far longer while Lightning's per-step cost stays the same.
"""

from __future__ import annotations

import os
import tempfile
import time


def run_t2i(args) -> dict:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from ..training.t2i_module import T2IFineTune
    from ..training.text_cache import CachedT2IDataset, build_t2i_cache, collate_items, t2i_cache_dir
    from ..unet.tiny import save_sd
    from .train_timing import lightning_images_per_s, median_cells

    work = tempfile.mkdtemp(prefix="priorswap-bench-t2i-")
    folder = save_sd(os.path.join(work, "sd"))
    n = args.batch_size * (args.steps + 2)
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(n, 3, args.resolution, args.resolution, generator=g) * 2 - 1
    size = torch.tensor([args.resolution, args.resolution])

    class Items(Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            cap = f"item {i} of a bench"
            return {"pixels": pixels[i], "caption": cap, "original_size": size, "crop_top_left": size * 0, "index": i}

    class DM(L.LightningDataModule):
        def __init__(self, cache: bool):
            super().__init__()
            self.ds, self.t2i_cache = Items(), os.path.join(work, "cache") if cache else None

        def build_t2i_cache(self, encode, encoder_id):
            where = t2i_cache_dir(self.t2i_cache, "bench", encoder_id, args.resolution)
            build_t2i_cache(where, self.ds, encode)
            self.ds = CachedT2IDataset(where)

        def train_dataloader(self):
            collate = None if isinstance(self.ds, CachedT2IDataset) else collate_items
            return DataLoader(self.ds, batch_size=args.batch_size, drop_last=True, collate_fn=collate)

    def module():
        torch.manual_seed(0)
        return T2IFineTune(folder, export_on_fit_end=False)

    def lightning(cache: bool) -> float:
        return lightning_images_per_s(args, module(), DM(cache))

    def plain(cache: bool) -> float:
        m, dm = module(), DM(cache)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        m.to(device).train()
        if cache:
            dm.build_t2i_cache(m.encode_items, m.cache_identity())
        opt = m.configure_optimizers()
        batches = iter(dm.train_dataloader())
        for step in range(args.steps + 2):
            if step == 2:
                start = time.perf_counter()
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(batches).items()}
            loss = m.diffusion_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            m.ema.update_parameters(m.trained_nets())
        if device == "cuda":
            torch.cuda.synchronize()
        return args.steps * args.batch_size / (time.perf_counter() - start)

    med = median_cells(plain, lightning, args.repeats)
    return {
        "med": med,
        "what": f"tiny random SD pipeline, {args.resolution} px (latents 1/2)",
        "cache_name": "latent + caption cache",
        "fly_name": "VAE and text encoders on the fly",
    }
