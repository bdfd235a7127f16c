"""Video outputs: H.264 ``.mp4`` (PyAV), an animated ``.gif`` and a lossless PNG strip of every frame.

Every file is written whole or not at all, honouring the umask (:func:`priorswap.toolkit.files.atomic_write`).
Frames are uint8 (T, H, W, 3). :func:`to_uint8_frames` converts exactly as upstream's ``save_results_seperate``
(``inference.py`` 136-156): clamp to [-1, 1], (x + 1) / 2, x 255, then **truncate** (``.to(torch.uint8)``), so
the PNG strips are the pixels a DynamiCrafter user's script would have written before its lossy H.264 step.
"""

from __future__ import annotations

import json
import os

import av
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import PriorswapError
from ..files import atomic_write
from ..images import make_grid


def to_uint8_frames(video: Tensor) -> np.ndarray:
    """(3, T, H, W) floats in [-1, 1] (values outside are clamped) -> (T, H, W, 3) uint8, truncated like upstream."""
    v = (torch.clamp(video.float(), -1.0, 1.0) + 1.0) / 2.0
    return (v * 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()


def strip(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) -> (H, T*W, 3): frame k in columns k*W .. k*W + W - 1."""
    t, h, w, c = frames.shape
    return frames.transpose(1, 0, 2, 3).reshape(h, t * w, c)


def write_strip(path: str, frames: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        Image.fromarray(strip(frames)).save(f, format="PNG")


def write_gif(path: str, frames: np.ndarray, fps: float) -> None:
    images = [Image.fromarray(fr) for fr in frames]
    with atomic_write(path, "wb") as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def write_mp4(path: str, frames: np.ndarray, fps: float, crf: int = 10) -> None:
    """H.264 in yuv420p (what players expect; odd sizes are padded by one pixel), constant rate factor ``crf``
    (upstream writes crf 10)."""
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:  # yuv420p needs even sides
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with atomic_write(path, "wb") as f:
        with av.open(f, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=round(fps) if float(fps).is_integer() else fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for fr in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def read_mp4(path: str) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a video file (for tests and for users checking an output)."""
    with av.open(path) as container:
        return np.stack([fr.to_ndarray(format="rgb24") for fr in container.decode(video=0)])


def read_fps(path: str) -> float:
    """The frame rate a video file states (its stream's average rate), as VBench's Dynamic Degree reads it from each
    file (OpenCV's CAP_PROP_FPS), rather than the rate a run meant to write."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise PriorswapError(f"video {path!r} states no frame rate; Dynamic Degree needs one")
    return float(rate)


def write_outputs(out: str, seen: Tensor, videos: dict[str, list[Tensor]], fps: float, seed: int, meta: dict) -> None:
    """``priorswap sample dynamicrafter``'s folder, every file whole (temp file, then rename), once all videos exist:
    ``input.png`` (``seen``, the image as the model saw it), ``MODE/NNN.mp4`` and ``.png`` strips, ``compare.mp4`` /
    ``compare.gif`` (one labelled grid per frame: rows = samples from ``seed`` on, columns = modes) and ``meta.json``."""
    os.makedirs(out, exist_ok=True)
    with atomic_write(os.path.join(out, "input.png"), "wb") as f:
        Image.fromarray(to_uint8_frames(seen[0][:, None])[0]).save(f, format="PNG")
    frames = {mode: [to_uint8_frames(v) for v in vids] for mode, vids in videos.items()}  # mode -> [(T, H, W, 3)]
    for mode, clips in frames.items():
        os.makedirs(os.path.join(out, mode), exist_ok=True)
        for i, clip in enumerate(clips):
            write_mp4(os.path.join(out, mode, f"{i:03d}.mp4"), clip, fps)
            write_strip(os.path.join(out, mode, f"{i:03d}.png"), clip)
    modes = list(frames)
    n, t = len(frames[modes[0]]), frames[modes[0]][0].shape[0]
    compare = []
    for k in range(t):
        rows = [
            torch.stack([torch.from_numpy(frames[m][i][k]).permute(2, 0, 1).float() / 255 for m in modes])
            for i in range(n)
        ]
        grid = make_grid(rows, row_labels=[f"seed {seed + i}" for i in range(n)], col_labels=modes)
        compare.append((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    compare = np.stack(compare)
    write_mp4(os.path.join(out, "compare.mp4"), compare, fps)
    write_gif(os.path.join(out, "compare.gif"), compare, fps)
    with atomic_write(os.path.join(out, "meta.json")) as f:
        json.dump(meta, f, indent=2)
