"""AMT-S, the frame interpolator of VBench's Motion Smoothness (MCG-NKU/AMT, as vendored by VBench under
``vbench/third_party/amt/`` at commit 45e79ec; file:line cited at each block).

A RAFT-style bidirectional correlation pyramid over a small feature encoder, an IFRNet-style image pyramid, and
coarse-to-fine decoders that refine two flows towards the middle frame, ending in three flow pairs blended into one
frame. Module and parameter names are upstream's, so ``amt-s.pth['state_dict']`` (213 tensors, 2,990,543 parameters)
loads with ``strict=True``; the arithmetic follows upstream's order of operations, so outputs agree to the bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHANNELS = (20, 32, 44, 56)  # the image pyramid (``networks/AMT-S.py`` 27)
SKIP = 20  # the side channels of each decoder's residual block (``networks/AMT-S.py`` 28)
FLOWS = 3  # flow pairs of the last decoder (``cfgs/AMT-S.yaml`` 17)
RADIUS, LEVELS = 3, 4  # correlation lookup window and pyramid depth (``cfgs/AMT-S.yaml`` 15-16)


def _up(x: Tensor, factor: float) -> Tensor:
    """Bilinear resize by ``factor``, ``align_corners=False`` (``networks/blocks/raft.py`` 6-7)."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def _conv_prelu(cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1) -> nn.Sequential:
    """Conv then a per-channel PReLU: ``convrelu`` (``networks/blocks/ifrnet.py`` 10-14)."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad), nn.PReLU(cout))


def warp(img: Tensor, flow: Tensor) -> Tensor:
    """Backward warp by ``flow`` in pixels, border padding (``utils/flow_utils.py`` 8-16; same arithmetic order)."""
    b, _, h, w = flow.shape
    gx = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(b, -1, h, -1)
    gy = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(b, -1, -1, w)
    base = torch.cat([gx, gy], 1).to(img)
    rel = torch.cat([flow[:, :1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], 1)
    grid = (base + rel).permute(0, 2, 3, 1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


def pixel_grid(b: int, h: int, w: int, device: torch.device) -> Tensor:
    """(b, 2, h, w) pixel coordinates, x first (``networks/blocks/raft.py`` 27-32)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys], 0).float()[None].repeat(b, 1, 1, 1)


class SideResBlock(nn.Module):
    """IFRNet's residual block: the last ``side`` channels get an extra conv twice (``ifrnet.py`` 16-53)."""

    def __init__(self, ch: int, side: int):
        super().__init__()
        self.side = side
        self.conv1 = _conv_prelu(ch, ch)
        self.conv2 = _conv_prelu(side, side)
        self.conv3 = _conv_prelu(ch, ch)
        self.conv4 = _conv_prelu(side, side)
        self.conv5 = nn.Conv2d(ch, ch, 3, 1, 1)
        self.prelu = nn.PReLU(ch)

    def forward(self, x: Tensor) -> Tensor:
        s = self.side
        y = self.conv1(x)
        y = self.conv3(torch.cat([y[:, :-s], self.conv2(y[:, -s:])], 1))
        y = self.conv5(torch.cat([y[:, :-s], self.conv4(y[:, -s:])], 1))
        return self.prelu(x + y)


def _decoder_block(cin: int, ch: int, cout: int) -> nn.Sequential:
    """conv+PReLU, residual block, 2x transposed conv: every decoder's ``convblock`` (``ifrnet.py`` 81-85, 97-101;
    ``multi_flow.py`` 50-54)."""
    return nn.Sequential(_conv_prelu(cin, ch), SideResBlock(ch, SKIP), nn.ConvTranspose2d(ch, cout, 4, 2, 1))


class FirstDecoder(nn.Module):
    """H/16 features of both frames and t -> two H/8 flows and the H/8 middle-frame feature (``ifrnet.py`` 78-92)."""

    def __init__(self, ch: int, out: int):
        super().__init__()
        self.convblock = _decoder_block(2 * ch + 1, 2 * ch, out + 4)

    def forward(self, f0: Tensor, f1: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.convblock(torch.cat([f0, f1, t.repeat(1, 1, *f0.shape[2:])], 1))
        return out[:, 0:2], out[:, 2:4], out[:, 4:]


class MidDecoder(nn.Module):
    """Refines the flows one scale up from the warped features (``ifrnet.py`` 94-111)."""

    def __init__(self, ch: int, out: int):
        super().__init__()
        self.convblock = _decoder_block(3 * ch + 4, 3 * ch, out + 4)

    def forward(self, ft: Tensor, f0: Tensor, f1: Tensor, fl0: Tensor, fl1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.convblock(torch.cat([ft, warp(f0, fl0), warp(f1, fl1), fl0, fl1], 1))
        return out[:, 0:2] + 2.0 * _up(fl0, 2.0), out[:, 2:4] + 2.0 * _up(fl1, 2.0), out[:, 4:]


class LastDecoder(nn.Module):
    """Full-resolution decoder: ``FLOWS`` flow pairs, blend masks and residuals (``multi_flow.py`` 46-69)."""

    def __init__(self, ch: int):
        super().__init__()
        self.convblock = _decoder_block(3 * ch + 4, 3 * ch, 8 * FLOWS)

    def forward(self, ft: Tensor, f0: Tensor, f1: Tensor, fl0: Tensor, fl1: Tensor) -> tuple[Tensor, ...]:
        out = self.convblock(torch.cat([ft, warp(f0, fl0), warp(f1, fl1), fl0, fl1], 1))
        d0, d1, mask, res = torch.split(out, [2 * FLOWS, 2 * FLOWS, FLOWS, 3 * FLOWS], 1)
        fl0 = d0 + 2.0 * _up(fl0, 2.0).repeat(1, FLOWS, 1, 1)
        fl1 = d1 + 2.0 * _up(fl1, 2.0).repeat(1, FLOWS, 1, 1)
        return fl0, fl1, torch.sigmoid(mask), res


class FlowUpdate(nn.Module):
    """RAFT's small update block without recurrence: one residual step on the flows and feature, at H/8
    (``networks/blocks/raft.py`` 35-85; AMT-S's sizes from ``networks/AMT-S.py`` 54-57)."""

    def __init__(self, cdim: int, down: int | None):
        super().__init__()
        hidden, flow_dim, corr_dim, fc_dim = 76, 20, 64, 68
        self.down = down
        self.convc1 = nn.Conv2d(2 * LEVELS * (2 * RADIUS + 1) ** 2, corr_dim, 1)
        self.convf1 = nn.Conv2d(4, 2 * flow_dim, 7, padding=3)
        self.convf2 = nn.Conv2d(2 * flow_dim, flow_dim, 3, padding=1)
        self.conv = nn.Conv2d(corr_dim + flow_dim, fc_dim, 3, padding=1)

        def head(cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(hidden, cout, 3, padding=1)
            )

        self.gru = nn.Sequential(
            nn.Conv2d(fc_dim + 4 + cdim, hidden, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, hidden, 3, padding=1),
        )
        self.feat_head = head(cdim)
        self.flow_head = head(4)

    def forward(self, feat: Tensor, flow: Tensor, corr: Tensor) -> tuple[Tensor, Tensor]:
        act = lambda x: F.leaky_relu(x, 0.1)
        if self.down is not None:
            feat = _up(feat, 1 / self.down)
        motion = torch.cat([act(self.convc1(corr)), act(self.convf2(act(self.convf1(flow))))], 1)
        hidden = self.gru(torch.cat([act(self.conv(motion)), flow, feat], 1))
        d_feat, d_flow = self.feat_head(hidden), self.flow_head(hidden)
        if self.down is not None:
            d_feat, d_flow = _up(d_feat, self.down), self.down * _up(d_flow, self.down)
        return d_feat, d_flow


class Bottleneck(nn.Module):
    """1x1 / 3x3 (strided) / 1x1 convs with instance norms, no affine parameters (``feat_enc.py`` 5-61)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout // 4, 1)
        self.conv2 = nn.Conv2d(cout // 4, cout // 4, 3, stride, 1)
        self.conv3 = nn.Conv2d(cout // 4, cout, 1)
        self.downsample = (
            None if stride == 1 else nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.InstanceNorm2d(cout))
        )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(F.instance_norm(self.conv1(x)))
        y = F.relu(F.instance_norm(self.conv2(y)))
        y = F.relu(F.instance_norm(self.conv3(y)))
        return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class CorrEncoder(nn.Module):
    """RAFT's small encoder with instance norm, 84 channels at H/8 (``feat_enc.py`` 117-189; ``AMT-S.py`` 36)."""

    def __init__(self, out: int = 84):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, 2, 3)
        dims = [(32, 32, 1), (32, 64, 2), (64, 96, 2)]
        for i, (cin, cout, stride) in enumerate(dims, 1):
            self.add_module(f"layer{i}", nn.Sequential(Bottleneck(cin, cout, stride), Bottleneck(cout, cout, 1)))
        self.conv2 = nn.Conv2d(96, out, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(F.instance_norm(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class ImagePyramid(nn.Module):
    """Four stride-2 stages of two conv+PReLU each: features at H/2 ... H/16 (``ifrnet.py`` 55-76)."""

    def __init__(self):
        super().__init__()
        prev = 3
        for i, ch in enumerate(CHANNELS, 1):
            self.add_module(f"pyramid{i}", nn.Sequential(_conv_prelu(prev, ch, 3, 2, 1), _conv_prelu(ch, ch)))
            prev = ch

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for i in range(1, len(CHANNELS) + 1):
            x = getattr(self, f"pyramid{i}")(x)
            out.append(x)
        return out


class CorrPyramid:
    """All-pairs correlation of two H/8 feature maps, both ways, average-pooled ``LEVELS`` times
    (``networks/blocks/raft.py`` 142-207)."""

    def __init__(self, fa: Tensor, fb: Tensor):
        b, c, h, w = fa.shape
        corr = torch.matmul(fa.view(b, c, h * w).transpose(1, 2), fb.view(b, c, h * w))
        corr = corr.view(b, h, w, 1, h, w) / torch.sqrt(torch.tensor(c).float())
        ab = corr.reshape(b * h * w, 1, h, w)  # for each pixel of a: its correlation with every pixel of b
        ba = corr.permute(0, 4, 5, 3, 1, 2).reshape(b * h * w, 1, h, w)  # and the other way
        self.ab, self.ba = [ab], [ba]
        for _ in range(LEVELS - 1):
            self.ab.append(F.avg_pool2d(self.ab[-1], 2, stride=2))
            self.ba.append(F.avg_pool2d(self.ba[-1], 2, stride=2))

    @staticmethod
    def _window(maps: Tensor, centre: Tensor, level: int) -> Tensor:
        """Bilinear samples of a (2R+1)^2 window around each centre (pixels), ``align_corners=True``. As in RAFT the
        window's first index steps x and its second steps y (``raft.py`` 178-186)."""
        n, (h, w) = centre.shape[0], maps.shape[-2:]
        d = torch.linspace(-RADIUS, RADIUS, 2 * RADIUS + 1, device=centre.device)
        di, dj = torch.meshgrid(d, d, indexing="ij")
        pts = centre.reshape(-1, 1, 1, 2) / 2**level + torch.stack([di, dj], -1).view(
            1, 2 * RADIUS + 1, 2 * RADIUS + 1, 2
        )
        x, y = pts.split([1, 1], dim=-1)
        grid = torch.cat([2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1], -1)
        return F.grid_sample(maps, grid, align_corners=True).view(n, -1)

    def __call__(self, at_b: Tensor, at_a: Tensor) -> tuple[Tensor, Tensor]:
        """Correlations around ``at_b`` (positions in b, per pixel of a) and ``at_a``: two (B, LEVELS (2R+1)^2, h, w)."""
        b, _, h, w = at_b.shape
        cb, ca = at_b.permute(0, 2, 3, 1), at_a.permute(0, 2, 3, 1)
        out = []
        for maps, centre in ((self.ab, cb), (self.ba, ca)):
            levels = [self._window(maps[i], centre, i).view(b, h, w, -1) for i in range(LEVELS)]
            out.append(torch.cat(levels, -1).permute(0, 3, 1, 2).contiguous().float())
        return out[0], out[1]


class AMTS(nn.Module):
    """AMT-S (``networks/AMT-S.py`` 22-52): ``forward(img0, img1, t)`` is the frame at time t between two (B, 3, H, W)
    frames in [0, 1], H and W multiples of 16; only what ``eval=True`` returns (``imgt_pred``)."""

    def __init__(self):
        super().__init__()
        self.feat_encoder = CorrEncoder()
        self.encoder = ImagePyramid()
        self.decoder4 = FirstDecoder(CHANNELS[3], CHANNELS[2])
        self.decoder3 = MidDecoder(CHANNELS[2], CHANNELS[1])
        self.decoder2 = MidDecoder(CHANNELS[1], CHANNELS[0])
        self.decoder1 = LastDecoder(CHANNELS[0])
        self.update4 = FlowUpdate(CHANNELS[2], None)
        self.update3 = FlowUpdate(CHANNELS[1], 2)
        self.update2 = FlowUpdate(CHANNELS[0], 4)
        self.comb_block = nn.Sequential(
            nn.Conv2d(3 * FLOWS, 6 * FLOWS, 3, 1, 1), nn.PReLU(6 * FLOWS), nn.Conv2d(6 * FLOWS, 3, 3, 1, 1)
        )

    @staticmethod
    def _lookup(corr: CorrPyramid, grid: Tensor, fl0: Tensor, fl1: Tensor, t: Tensor, down: int):
        """Flows towards t rescaled to whole 0->1 / 1->0 flows (linear motion) at H/8, their correlations and the
        flows themselves (``AMT-S.py`` 59-72)."""
        if down != 1:
            fl0, fl1 = (1 / down) * _up(fl0, 1 / down), (1 / down) * _up(fl1, 1 / down)
        c0, c1 = corr(grid + fl1 * (1.0 / t), grid + fl0 * (1.0 / (1.0 - t)))
        return torch.cat([c0, c1], 1), torch.cat([fl0, fl1], 1)

    def _refine(self, update: FlowUpdate, corr, grid, fl0, fl1, ft, t, down):
        """One correlation-guided residual step (``AMT-S.py`` 93-102, 106-115, 119-128)."""
        c, flow = self._lookup(corr, grid, fl0, fl1, t, down)
        d_ft, d_flow = update(ft, flow, c)
        d0, d1 = torch.chunk(d_flow, 2, 1)
        return fl0 + d0, fl1 + d1, ft + d_ft

    def forward(self, img0: Tensor, img1: Tensor, t: float | Tensor = 0.5, scale: float = 1.0) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float32, device=img0.device).reshape(1, 1, 1, 1)
        mean = torch.cat([img0, img1], 2).mean(1, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)  # 75
        img0, img1 = img0 - mean, img1 - mean
        x0, x1 = (_up(img0, scale), _up(img1, scale)) if scale != 1.0 else (img0, img1)  # 78-79
        b, _, h, w = x0.shape
        grid = pixel_grid(b, h // 8, w // 8, img0.device)
        fmap0, fmap1 = torch.split(self.feat_encoder(torch.cat([x0, x1], 0)), [b, b], 0)
        corr = CorrPyramid(fmap0, fmap1)
        f0, f1 = self.encoder(x0), self.encoder(x1)

        fl0, fl1, ft = self.decoder4(f0[3], f1[3], t)
        fl0, fl1, ft = self._refine(self.update4, corr, grid, fl0, fl1, ft, t, 1)
        fl0, fl1, ft = self.decoder3(ft, f0[2], f1[2], fl0, fl1)
        fl0, fl1, ft = self._refine(self.update3, corr, grid, fl0, fl1, ft, t, 2)
        fl0, fl1, ft = self.decoder2(ft, f0[1], f1[1], fl0, fl1)
        fl0, fl1, ft = self._refine(self.update2, corr, grid, fl0, fl1, ft, t, 4)
        fl0, fl1, mask, res = self.decoder1(ft, f0[0], f1[0], fl0, fl1)
        if scale != 1.0:  # 133-137
            fl0, fl1 = _up(fl0, 1.0 / scale) * (1.0 / scale), _up(fl1, 1.0 / scale) * (1.0 / scale)
            mask, res = _up(mask, 1.0 / scale), _up(res, 1.0 / scale)
        return torch.clamp(blend(self.comb_block, img0, img1, fl0, fl1, mask, res, mean), 0, 1)  # 140-142


def blend(
    comb: nn.Module, img0: Tensor, img1: Tensor, fl0: Tensor, fl1: Tensor, mask: Tensor, res: Tensor, mean: Tensor
) -> Tensor:
    """Warp both frames by each of the ``FLOWS`` flow pairs, mix by the masks, add the residual and the mean, average
    the candidates and add the combination block's correction (``multi_flow.py`` 10-43)."""
    b, _, h, w = fl0.shape
    n = FLOWS
    rep = lambda x, c: torch.stack([x] * n, 1).reshape(-1, c, h, w)
    w0 = warp(rep(img0, 3), fl0.reshape(b * n, 2, h, w))
    w1 = warp(rep(img1, 3), fl1.reshape(b * n, 2, h, w))
    m = mask.reshape(b * n, 1, h, w)
    cand = m * w0 + (1 - m) * w1 + torch.stack([mean] * n, 1).reshape(-1, 1, 1, 1) + res.reshape(b * n, 3, h, w)
    cand = cand.reshape(b, n, 3, h, w)
    return cand.mean(1) + comb(cand.view(b, -1, h, w))
