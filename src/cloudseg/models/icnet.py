"""ICNet (Zhao et al., ECCV 2018) on a dilated ResNet50-v1s, fed an image pyramid.

State-dict compatible with liminn/ICNet-pytorch (``ICNet(nclass=19, backbone='resnet50')``,
71.0% mIoU on Cityscapes val): the released checkpoint loads with a strict
``load_state_dict``. Three branches:

- full resolution (hr): ``conv_sub1``, three stride-2 conv-BN-ReLU, 1/8 of hr;
- 1/2 resolution (mr): backbone stem..layer2, 1/8 of mr = 1/16 of hr;
- 1/4 resolution (lr): backbone stem..layer4 (dilated) + pyramid pooling, 1/32 of hr.

Cascade feature fusion (CFF) merges lr into mr and the result into hr; each CFF also emits a
classifier on its upsampled low-resolution input (cascade label guidance).

Unlike the reference, which runs backbone layer3/layer4 on the mr branch and throws the result
away (294.5 GMACs at 2048x1024), this computes only what is used (114.1 GMACs) with identical
outputs. One training-time side effect: layer3/layer4 BatchNorm running statistics are updated
from the lr branch only (the reference also fed them mr statistics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ICNET_LOSS_WEIGHTS",
    "INPUT_MEAN",
    "INPUT_STD",
    "ICNet",
    "ICNetInputError",
    "count_macs",
    "icnet_loss",
    "icnet_resnet50",
    "make_pyramid",
]

#: Input normalisation of the released checkpoint: RGB scaled to [0, 1], then (x - mean) / std.
INPUT_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
INPUT_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Loss weights for the training outputs (1/4, 1/8, 1/16), as liminn's ICNetLoss.
ICNET_LOSS_WEIGHTS: tuple[float, float, float] = (1.0, 0.4, 0.4)

#: Smallest full-resolution side accepted (the lr branch ends at 1/32 of it).
MIN_INPUT_SIDE = 32

#: One image at several sizes, keyed by downsampling factor: {1: full, 2: half, 4: quarter}
#: (as `cloudseg.restore.results.Pyramid.levels`; ICNet's hr, mr and lr branches).
Levels = dict[int, Tensor]

#: Logits at 1/4, 1/8 and 1/16 of the full frame (the cascade label guidance outputs).
HeadOutputs = tuple[Tensor, Tensor, Tensor]


class ICNetInputError(ValueError):
    """An input image, pyramid, or loss target that ICNet cannot use."""


def _upsample(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def make_pyramid(x: Tensor) -> Levels:
    """{1: full, 2: 1/2, 4: 1/4} of a normalised NCHW image, exactly as the reference."""
    mr = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=True)
    lr = F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=True)
    return {1: x, 2: mr, 4: lr}


# --- ResNet50-v1s backbone (deep stem, dilated layer3/layer4, output stride 8) -------------


class Bottleneck(nn.Module):
    """ResNet v1b bottleneck: the stride sits in the 3x3 convolution."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        width = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity, inplace=True)


def _make_layer(
    inplanes: int, planes: int, blocks: int, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    """A stage of bottlenecks; the first block of a dilated stage uses half the dilation."""
    width = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != width:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, width, 1, stride, bias=False), nn.BatchNorm2d(width)
        )
    first_dilation = max(1, dilation // 2)
    layers = [Bottleneck(inplanes, planes, stride, first_dilation, downsample)]
    layers += [Bottleneck(width, planes, 1, dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet50V1s(nn.Module):
    """Dilated ResNet50-v1s; ``fc`` is the unused ImageNet classifier, kept for the keys."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, 1, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(128)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _make_layer(128, 64, 3)
        self.layer2 = _make_layer(256, 128, 4, stride=2)
        self.layer3 = _make_layer(512, 256, 6, dilation=2)
        self.layer4 = _make_layer(1024, 512, 3, dilation=4)
        self.fc = nn.Linear(2048, 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_c2(self, x: Tensor) -> Tensor:
        """Stem, layer1, layer2: 512 channels at 1/8."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer2(self.layer1(x))

    def forward_c4(self, x: Tensor) -> Tensor:
        """Through layer4: 2048 channels at 1/8 (dilated)."""
        return self.layer4(self.layer3(self.forward_c2(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_c4(x)


# --- ICNet pieces ---------------------------------------------------------------------------


class ConvBNReLU(nn.Module):
    """3x3 convolution, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class PyramidPooling(nn.Module):
    """Parameter-free PSP pooling: add bilinear-upsampled average pools at bins 1, 2, 3, 6."""

    def __init__(self, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.bins = tuple(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        out = x
        for b in self.bins:
            out = out + _upsample(F.adaptive_avg_pool2d(x, b), size)
        return out


class CascadeFeatureFusion(nn.Module):
    """CFF unit: upsample the low-res input to the high-res one, fuse, and classify the former."""

    def __init__(
        self, low_channels: int, high_channels: int, out_channels: int, num_classes: int
    ) -> None:
        super().__init__()
        self.conv_low = nn.Sequential(
            nn.Conv2d(low_channels, out_channels, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.conv_high = nn.Sequential(
            nn.Conv2d(high_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.conv_low_cls = nn.Conv2d(out_channels, num_classes, 1, bias=False)

    def forward(self, x_low: Tensor, x_high: Tensor) -> tuple[Tensor, Tensor]:
        low = self.conv_low(_upsample(x_low, x_high.shape[-2:]))
        fused = F.relu(low + self.conv_high(x_high))
        return fused, self.conv_low_cls(low)


class ICHead(nn.Module):
    """Two CFF units and the final 1x1 classifier."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.cff_12 = CascadeFeatureFusion(128, 64, 128, num_classes)
        self.cff_24 = CascadeFeatureFusion(2048, 512, 128, num_classes)
        self.conv_cls = nn.Conv2d(128, num_classes, 1, bias=False)

    def forward(self, x_sub1: Tensor, x_sub2: Tensor, x_sub4: Tensor) -> HeadOutputs:
        """Logits at (1/4, 1/8, 1/16) of the full frame."""
        x_24, cls_16 = self.cff_24(x_sub4, x_sub2)
        x_12, cls_8 = self.cff_12(x_24, x_sub1)
        up = F.interpolate(x_12, scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv_cls(up), cls_8, cls_16


class ICNet(nn.Module):
    """ICNet with a ResNet50-v1s backbone; attribute names follow liminn/ICNet-pytorch.

    ``forward(x)`` takes a normalised NCHW image (the pyramid is then built as the reference
    does, see :func:`make_pyramid`) or the levels ``{1: hr, 2: mr, 4: lr}`` of full, 1/2 and
    1/4 resolution (`Levels`, keyed by downsampling factor as the restoration pipeline's).
    In eval mode it returns logits ``(N, num_classes, H, W)`` at hr size (the reference's
    first output). In training mode it returns the cascade label guidance outputs
    ``(out_4, out_8, out_16)``: logits at 1/4, 1/8 and 1/16 of hr (the reference's outputs
    1..3), for :func:`icnet_loss`.
    """

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.pretrained = ResNet50V1s()
        self.conv_sub1 = nn.Sequential(
            ConvBNReLU(3, 32, 2), ConvBNReLU(32, 32, 2), ConvBNReLU(32, 64, 2)
        )
        self.ppm = PyramidPooling()
        self.head = ICHead(num_classes)

    def forward(self, x: Tensor | Mapping[int, Tensor]) -> Tensor | HeadOutputs:
        lr, mr, hr = _branches(x)
        x_sub1 = self.conv_sub1(hr)
        x_sub2 = self.pretrained.forward_c2(mr)
        x_sub4 = self.ppm(self.pretrained.forward_c4(lr))
        out_4, out_8, out_16 = self.head(x_sub1, x_sub2, x_sub4)
        if self.training:
            return out_4, out_8, out_16
        return _upsample(out_4, hr.shape[-2:])


def _check_image(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ICNetInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ICNetInputError(f"{name} must be N x 3 x H x W, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ICNetInputError(f"{name} must be a normalised float tensor, got {x.dtype}")
    return x


def _branches(x: Tensor | Mapping[int, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Validate the input and return the (lr, mr, hr) branch inputs."""
    if isinstance(x, Tensor):
        hr = _check_image(x, "input")
        _check_size(hr)
        levels = make_pyramid(hr)
        return levels[4], levels[2], levels[1]
    if not isinstance(x, Mapping) or sorted(x) != [1, 2, 4]:
        raise ICNetInputError(
            "input must be an image tensor or levels {1: hr, 2: mr, 4: lr} (by downsampling factor)"
        )
    lr, mr, hr = (_check_image(x[k], f"level {k}") for k in (4, 2, 1))
    _check_size(hr)
    for t, factor in ((mr, 2), (lr, 4)):
        if t.shape[0] != hr.shape[0] or t.dtype != hr.dtype or t.device != hr.device:
            raise ICNetInputError(
                f"level {factor} differs from level 1 in batch size, dtype or device"
            )
        for side, full in zip(t.shape[-2:], hr.shape[-2:], strict=True):
            if abs(side * factor - full) > factor:
                raise ICNetInputError(
                    f"level {factor} must be 1/{factor} of level 1 {tuple(hr.shape[-2:])}, "
                    f"got {tuple(t.shape[-2:])}"
                )
    return lr, mr, hr


def _check_size(hr: Tensor) -> None:
    if min(hr.shape[-2:]) < MIN_INPUT_SIDE:
        raise ICNetInputError(
            f"image sides must be at least {MIN_INPUT_SIDE}, got {tuple(hr.shape[-2:])}"
        )


def icnet_resnet50(num_classes: int = 19) -> ICNet:
    """ICNet-ResNet50 as liminn/ICNet-pytorch (random weights; load the checkpoint strictly)."""
    return ICNet(num_classes)


def icnet_loss(outputs: Sequence[Tensor], target: Tensor, ignore_index: int = 255) -> Tensor:
    """Cascade label guidance loss: 1.0 * CE(1/4) + 0.4 * CE(1/8) + 0.4 * CE(1/16).

    ``outputs`` is the training tuple ``(out_4, out_8, out_16)``, or the reference's 4-tuple
    ``(full, out_4, out_8, out_16)`` whose first entry is ignored, as liminn's ICNetLoss does.
    ``target`` holds class ids ``(N, H, W)`` at full resolution; it is downsampled to each
    output with nearest-neighbour sampling (the reference's bilinear sampling of class ids
    would invent ids at borders, and values next to ``ignore_index``).
    """
    outs = tuple(outputs)
    if len(outs) == 4:
        outs = outs[1:]
    if len(outs) != 3 or not all(isinstance(o, Tensor) and o.ndim == 4 for o in outs):
        raise ICNetInputError("outputs must be ICNet's training tuple of three N x C x h x w")
    if not isinstance(target, Tensor) or target.ndim != 3 or target.is_floating_point():
        raise ICNetInputError("target must be an integer tensor of class ids, N x H x W")
    if target.shape[0] != outs[0].shape[0]:
        raise ICNetInputError(
            f"target batch {target.shape[0]} differs from outputs batch {outs[0].shape[0]}"
        )
    num_classes = outs[0].shape[1]
    valid = (target == ignore_index) | ((target >= 0) & (target < num_classes))
    if not bool(valid.all()):
        raise ICNetInputError(
            f"target has ids outside 0..{num_classes - 1} that are not ignore_index {ignore_index}"
        )
    target_f = target[:, None].float()
    loss = outs[0].new_zeros(())
    for out, weight in zip(outs, ICNET_LOSS_WEIGHTS, strict=True):
        t = F.interpolate(target_f, size=out.shape[-2:], mode="nearest")[:, 0].long()
        loss = loss + weight * F.cross_entropy(out, t, ignore_index=ignore_index)
    return loss


def count_macs(
    model: nn.Module, input_shape: Sequence[int], forward: Callable[[Tensor], object] | None = None
) -> int:
    """Multiply-accumulates of every Conv2d and Linear call in one eval forward.

    Runs on the model's device with a zero input; build the model under
    ``torch.device("meta")`` to count a full-size frame without computing anything.
    ``forward`` replaces ``model(x)`` (e.g. to count a different forward of the same modules).
    """
    total = 0

    def hook(module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    param = next(model.parameters())
    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(tuple(input_shape), dtype=param.dtype, device=param.device)
            (forward or model)(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
