"""CARN and CARN-M super-resolution (Ahn et al., ECCV 2018), multi-scale x2/x3/x4.

One shared body (entry conv, three cascading blocks with 1x1 fusions) and one upsampling head
per scale. Parameter names follow the official nmhkahn/CARN-pytorch code, so its multi-scale
checkpoints (``carn.pth``, ``carn_m.pth``) load with ``strict=True``.

Input and output are RGB float in [0, 1], NCHW. ``forward`` does not clamp (neither does the
official model); use :func:`clamp_sr` or :func:`upscale_image` for displayable output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CARN", "DIV2K_RGB_MEAN", "carn", "carn_m", "clamp_sr", "upscale_image"]

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
SUPPORTED_SCALES = (2, 3, 4)


class MeanShift(nn.Module):
    """Add or subtract the DIV2K mean with a frozen 1x1 conv (kept in the state_dict)."""

    def __init__(self, mean_rgb: Sequence[float], sign: int) -> None:
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.shifter.bias.copy_(torch.tensor(mean_rgb) * sign)
        self.shifter.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.shifter(x)


class ConvReLU(nn.Module):
    """Conv followed by ReLU (the official ``BasicBlock``; used for the 1x1 fusions)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, kernel, 1, kernel // 2), nn.ReLU(True))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    """CARN residual block: conv3x3, ReLU, conv3x3, +x, ReLU."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1), nn.ReLU(True), nn.Conv2d(ch, ch, 3, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + x)


class EResidualBlock(nn.Module):
    """CARN-M efficient residual block: grouped conv3x3 x2 (ReLU), conv1x1, +x, ReLU."""

    def __init__(self, ch: int, group: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1, groups=group),
            nn.ReLU(True),
            nn.Conv2d(ch, ch, 3, 1, 1, groups=group),
            nn.ReLU(True),
            nn.Conv2d(ch, ch, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + x)


def _cascade(x: Tensor, blocks: Sequence[nn.Module], fusions: Sequence[nn.Module]) -> Tensor:
    """The cascading mechanism: concat all earlier outputs, fuse with 1x1 conv, repeat."""
    cat = out = x
    for block, fuse in zip(blocks, fusions, strict=True):
        cat = torch.cat([cat, block(out)], dim=1)
        out = fuse(cat)
    return out


class CascadeBlock(nn.Module):
    """Local cascading block: three residual blocks (CARN-M: ONE shared block applied 3x)."""

    def __init__(self, ch: int, mobile: bool, group: int) -> None:
        super().__init__()
        if mobile:
            self.b1 = EResidualBlock(ch, group)
        else:
            self.b1 = ResidualBlock(ch)
            self.b2 = ResidualBlock(ch)
            self.b3 = ResidualBlock(ch)
        self.mobile = mobile
        self.c1 = ConvReLU(ch * 2, ch)
        self.c2 = ConvReLU(ch * 3, ch)
        self.c3 = ConvReLU(ch * 4, ch)

    def forward(self, x: Tensor) -> Tensor:
        blocks = (self.b1,) * 3 if self.mobile else (self.b1, self.b2, self.b3)
        return _cascade(x, blocks, (self.c1, self.c2, self.c3))


class UpsampleHead(nn.Module):
    """Sub-pixel upsampler: (grouped conv3x3 to r*r*ch, ReLU, PixelShuffle(r)); x4 = two x2."""

    def __init__(self, ch: int, scale: int, group: int) -> None:
        super().__init__()
        steps = {2: [2], 3: [3], 4: [2, 2]}[scale]
        layers: list[nn.Module] = []
        for r in steps:
            layers += [nn.Conv2d(ch, r * r * ch, 3, 1, 1, groups=group), nn.ReLU(True)]
            layers.append(nn.PixelShuffle(r))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class MultiScaleUpsample(nn.Module):
    """One head per scale, named ``up2``/``up3``/``up4`` as in the official checkpoints."""

    def __init__(self, ch: int, scales: Iterable[int], group: int) -> None:
        super().__init__()
        for s in scales:
            self.add_module(f"up{s}", UpsampleHead(ch, s, group))

    def forward(self, x: Tensor, scale: int) -> Tensor:
        return getattr(self, f"up{scale}")(x)


class CARN(nn.Module):
    """Cascading Residual Network (``mobile=True``: CARN-M) with one head per scale.

    ``group`` is the group count of the grouped convs (efficient residual blocks and
    upsampling heads); default 4 for CARN-M, 1 for CARN, as in the official checkpoints.
    """

    def __init__(
        self,
        mobile: bool = False,
        scales: Iterable[int] = SUPPORTED_SCALES,
        group: int | None = None,
        channels: int = 64,
    ) -> None:
        super().__init__()
        scales = tuple(sorted(set(int(s) for s in scales)))
        bad = [s for s in scales if s not in SUPPORTED_SCALES]
        if not scales or bad:
            raise ValueError(
                f"CARN scales must be a non-empty subset of {SUPPORTED_SCALES}, got {bad}"
            )
        group = (4 if mobile else 1) if group is None else int(group)
        if group < 1 or channels % group:
            raise ValueError(f"channels={channels} must be divisible by group={group}")
        self.mobile = mobile
        self.scales = scales
        self.group = group
        ch = channels

        self.sub_mean = MeanShift(DIV2K_RGB_MEAN, sign=-1)
        self.add_mean = MeanShift(DIV2K_RGB_MEAN, sign=1)
        self.entry = nn.Conv2d(3, ch, 3, 1, 1)
        self.b1 = CascadeBlock(ch, mobile, group)
        self.b2 = CascadeBlock(ch, mobile, group)
        self.b3 = CascadeBlock(ch, mobile, group)
        self.c1 = ConvReLU(ch * 2, ch)
        self.c2 = ConvReLU(ch * 3, ch)
        self.c3 = ConvReLU(ch * 4, ch)
        self.upsample = MultiScaleUpsample(ch, scales, group)
        self.exit = nn.Conv2d(ch, 3, 3, 1, 1)

    def _check(self, x: Tensor, scales: Iterable[int]) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"CARN expects an RGB batch N x 3 x H x W, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"CARN expects float input in [0, 1], got dtype {x.dtype}")
        for s in scales:
            if s not in self.scales:
                raise ValueError(f"scale {s} not available; this model has heads {self.scales}")

    def features(self, x: Tensor) -> Tensor:
        """The shared body: mean shift, entry conv and the global cascade (LR resolution)."""
        h = self.entry(self.sub_mean(x))
        return _cascade(h, (self.b1, self.b2, self.b3), (self.c1, self.c2, self.c3))

    def head(self, feats: Tensor, scale: int) -> Tensor:
        """Upsample body features by ``scale`` and map back to RGB."""
        return self.add_mean(self.exit(self.upsample(feats, scale)))

    def forward(self, x: Tensor, scale: int) -> Tensor:
        """Super-resolve ``x`` (N x 3 x H x W, RGB [0, 1]) by ``scale``; not clamped."""
        self._check(x, (scale,))
        return self.head(self.features(x), scale)

    def forward_pyramid(
        self, x: Tensor, scales: Iterable[int] = (2, 4), clamp: bool = False
    ) -> dict[int, Tensor]:
        """Run the body ONCE and every requested head: ``{scale: output}``."""
        scales = tuple(scales)
        self._check(x, scales)
        feats = self.features(x)
        out = {s: self.head(feats, s) for s in scales}
        return {s: clamp_sr(t) for s, t in out.items()} if clamp else out


def clamp_sr(x: Tensor) -> Tensor:
    """Clamp SR output to the valid [0, 1] range."""
    return x.clamp(0.0, 1.0)


@torch.no_grad()
def upscale_image(model: CARN, image: np.ndarray, scale: int) -> np.ndarray:
    """Super-resolve one H x W x 3 uint8 RGB image; returns uint8 RGB (rounded, clamped)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}")
    param = next(model.parameters())
    x = torch.tensor(image).permute(2, 0, 1)[None]  # copies: input may be read-only
    x = x.to(device=param.device, dtype=param.dtype) / 255.0
    y = clamp_sr(model(x, scale))[0].permute(1, 2, 0)
    return (y * 255.0).round().to(torch.uint8).cpu().numpy()


def carn(**kw) -> CARN:
    """Full CARN (1.59 M params, group=1), multi-scale x2/x3/x4."""
    return CARN(mobile=False, **kw)


def carn_m(**kw) -> CARN:
    """CARN-M (0.41 M params, group=4), multi-scale x2/x3/x4."""
    return CARN(mobile=True, **kw)
