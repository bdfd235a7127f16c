"""One command line run as N processes by the usual launchers: ``torchrun --nproc-per-node N`` or SLURM's ``srun``.

The evaluations shard their work by (rank, world) themselves, so all they need is the launcher's rank and world size;
Lightning's cluster environments read them (TORCHELASTIC/RANK/WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS). Sums over
ranks (the DiT evaluation's feature statistics) and the wait before scoring a protocol's samples go through a gloo
process group, which works on CPU and beside CUDA alike and never touches the GPU's memory.
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

from .checks import resolve_device

GROUP_TIMEOUT = timedelta(minutes=30)  # a rank that dies mid-evaluation ends the others' wait within this


@dataclass(frozen=True)
class Launch:
    rank: int
    world: int
    local_rank: int
    address: str
    port: int


def detect() -> Launch | None:
    """This process's place in a torchrun or srun launch of more than one process; None when launched alone."""
    if TorchElasticEnvironment.detect():
        env = TorchElasticEnvironment()
        if env.world_size() > 1:
            return Launch(env.global_rank(), env.world_size(), env.local_rank(), env.main_address, env.main_port)
    elif SLURMEnvironment.detect() and int(os.environ["SLURM_NTASKS"]) > 1:
        # Read directly: SLURMEnvironment() refuses `--ntasks` without `--ntasks-per-node`, a rule of Lightning's
        # training launch that an evaluation, which only needs its rank, does not have.
        nodes = os.environ.get("SLURM_NODELIST", "127.0.0.1")
        job = os.environ.get("SLURM_JOB_ID", "")
        port = os.environ.get("MASTER_PORT") or str(15000 + int(job[-4:]) if job.isdigit() else 12910)  # Lightning's
        return Launch(
            int(os.environ["SLURM_PROCID"]),
            int(os.environ["SLURM_NTASKS"]),
            int(os.environ.get("SLURM_LOCALID", "0")),
            os.environ.get("MASTER_ADDR") or SLURMEnvironment.resolve_root_node_address(nodes),
            int(port),
        )
    return None


def local_device(device: str, launch: Launch | None) -> str:
    """``cuda`` (or ``auto`` on a CUDA machine) is this process's own GPU, ``cuda:LOCAL_RANK``, under a launcher."""
    device = resolve_device(device)
    return f"cuda:{launch.local_rank}" if launch is not None and device == "cuda" else device


@contextmanager
def process_group(launch: Launch) -> Iterator[None]:
    """A gloo group over the launched processes, for the duration of the evaluation."""
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{launch.address}:{launch.port}",
        rank=launch.rank,
        world_size=launch.world,
        timeout=GROUP_TIMEOUT,
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks (on CPU, where gloo works for any dtype), back on ``t``'s device."""
    x = t.detach().cpu().clone()
    dist.all_reduce(x)
    return x.to(t.device)


def shard_then_score(cfg, run: Callable[[object], object]):
    """A resumable, shardable protocol (``cfg.shard``, ``cfg.device``) under a launcher: each rank samples its share
    as ``--shard RANK/WORLD`` would, then rank 0 scores every sample on disk as the unsharded run would; the other
    ranks return None. Alone, or with an explicit ``--shard``, it is ``run(cfg)``."""
    launch = detect()
    if launch is None or cfg.shard is not None:
        return run(cfg)

    mine = copy.copy(cfg)
    mine.shard, mine.device = (launch.rank, launch.world), local_device(cfg.device, launch)
    with process_group(launch):
        run(mine)
        dist.barrier()  # every share is on disk before rank 0 scores
    if launch.rank != 0:
        return None
    whole = copy.copy(cfg)
    whole.device = local_device(cfg.device, launch)
    return run(whole)


def is_launch_rank_zero() -> bool:
    """Whether this is the first process of a (possibly multi-process) launch: every rank variable set is 0.

    Lightning's DDP launcher starts ranks 1.. as copies of this command with LOCAL_RANK / NODE_RANK set, once rank 0
    is running; torchrun sets RANK, SLURM's srun SLURM_PROCID.
    """
    keys = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
    return all(os.environ.get(k, "0").strip() in ("", "0") for k in keys)
