"""ESPNetv2 semantic segmentation (Mehta et al., CVPR 2019), a port of sacmehta/EdgeNets.

Re-implements ``model/segmentation/espnetv2.py: espnetv2_seg`` (dataset='city') with its EESPNet
backbone (``model/classification/espnetv2.py``) and the layers it uses from ``nn_layers/``. Module
and parameter names follow the reference, so the official Cityscapes checkpoints
(``espnetv2_s_2.0_city_{1024x512,512x256}.pth``) load with ``strict=True``.

Input: RGB in [0, 1] normalised with the ImageNet mean/std, NCHW, height and width multiples of 16.
Output: logits (N, classes, H, W) at input resolution; for Cityscapes 20 classes = train ids 0..18
plus 19 = background (mapped to 255 = ignore by :func:`predict_train_ids`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Channels per encoder level for each width scale ``s`` (reference ``espnetv2_config.sc_ch_dict``).
CHANNELS_BY_SCALE: dict[float, tuple[int, ...]] = {
    0.5: (16, 32, 64, 128, 256, 1024),
    1.0: (32, 64, 128, 256, 512, 1024),
    1.25: (32, 80, 160, 320, 640, 1024),
    1.5: (32, 96, 192, 384, 768, 1024),
    2.0: (32, 128, 256, 512, 1024, 1280),
}
_REPS = (0, 3, 7, 3)  # EESP blocks per level (level5 is dropped for segmentation)
_RECEPTIVE_LIMIT = (13, 11, 9, 7, 5)  # largest receptive field per spatial level
_BRANCHES = 4  # parallel dilated branches in every EESP block
_REINF_CHANNELS = 3  # channels of the input-reinforcement path (the RGB image)
_DEC_BASE_PLANES = 16  # 'city' (and 'pascal') decoder width
_STRIDE = 16  # total encoder stride: inputs must be multiples of this
IGNORE_ID = 255


class ESPNetv2InputError(ValueError):
    """Input the model cannot process (wrong shape, size, dtype)."""


# ----------------------------------------------------------------------------------------------
# Backbone layers (reference nn_layers/espnet_utils.py: attributes conv / bn / act)
# ----------------------------------------------------------------------------------------------
class CBR(nn.Module):
    """Conv (no bias, 'same' padding) -> BatchNorm -> PReLU."""

    def __init__(self, n_in: int, n_out: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        pad = (k - 1) // 2
        self.conv = nn.Conv2d(n_in, n_out, k, stride, pad, bias=False, groups=groups)
        self.bn = nn.BatchNorm2d(n_out)
        self.act = nn.PReLU(n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class CB(nn.Module):
    """Conv (no bias, 'same' padding) -> BatchNorm."""

    def __init__(self, n_in: int, n_out: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        pad = (k - 1) // 2
        self.conv = nn.Conv2d(n_in, n_out, k, stride, pad, bias=False, groups=groups)
        self.bn = nn.BatchNorm2d(n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class BR(nn.Module):
    """BatchNorm -> PReLU."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(n_out)
        self.act = nn.PReLU(n_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(x))


class CDilated(nn.Module):
    """Dilated conv (no bias, 'same' padding), used depth-wise in EESP."""

    def __init__(self, n_in: int, n_out: int, k: int, stride: int, d: int, groups: int) -> None:
        super().__init__()
        pad = (k - 1) // 2 * d
        self.conv = nn.Conv2d(n_in, n_out, k, stride, pad, dilation=d, bias=False, groups=groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class EESP(nn.Module):
    """Extremely Efficient Spatial Pyramid block: reduce, split, dilated transform, HFF, merge."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        stride: int = 1,
        k: int = 4,
        r_lim: int = 7,
        down_avg: bool = False,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.down_avg = down_avg
        n = n_out // k
        if n * k != n_out:
            raise ValueError(f"EESP: n_out={n_out} must be divisible by k={k}")
        self.proj_1x1 = CBR(n_in, n, 1, 1, groups=k)
        # kernel size 3+2i reached by dilation; beyond r_lim fall back to 3 (dilation 1); sorted
        k_sizes = sorted(3 + 2 * i if 3 + 2 * i <= r_lim else 3 for i in range(k))
        self.spp_dw = nn.ModuleList(
            CDilated(n, n, 3, stride, d=(ks - 1) // 2, groups=n) for ks in k_sizes
        )
        self.conv_1x1_exp = CB(n_out, n_out, 1, 1, groups=k)
        self.br_after_cat = BR(n_out)
        self.module_act = nn.PReLU(n_out)

    def forward(self, x: Tensor) -> Tensor:
        reduced = self.proj_1x1(x)
        outs = [self.spp_dw[0](reduced)]
        for branch in list(self.spp_dw)[1:]:  # hierarchical feature fusion
            outs.append(branch(reduced) + outs[-1])
        expanded = self.conv_1x1_exp(self.br_after_cat(torch.cat(outs, 1)))
        if self.stride == 2 and self.down_avg:
            return expanded  # the DownSampler adds its own branches and activation
        if expanded.shape == x.shape:
            expanded = expanded + x
        return self.module_act(expanded)


class DownSampler(nn.Module):
    """Stride-2 unit: concat(avg-pool, strided EESP) + reinforcement from the (pooled) image."""

    def __init__(self, n_in: int, n_out: int, k: int, r_lim: int) -> None:
        super().__init__()
        self.eesp = EESP(n_in, n_out - n_in, stride=2, k=k, r_lim=r_lim, down_avg=True)
        self.avg = nn.AvgPool2d(kernel_size=3, padding=1, stride=2)
        self.inp_reinf = nn.Sequential(
            CBR(_REINF_CHANNELS, _REINF_CHANNELS, 3, 1),
            CB(_REINF_CHANNELS, n_out, 1, 1),
        )
        self.act = nn.PReLU(n_out)

    def forward(self, x: Tensor, image: Tensor) -> Tensor:
        avg_out = self.avg(x)
        out = torch.cat([avg_out, self.eesp(x)], 1)
        # pool the image by 2 until its height matches this level (as the reference does)
        target_h = avg_out.shape[2]
        while image.shape[2] > target_h:
            image = F.avg_pool2d(image, kernel_size=3, padding=1, stride=2)
        if image.shape[2:] != avg_out.shape[2:]:
            raise ESPNetv2InputError(f"input size not compatible with a stride-{_STRIDE} encoder")
        return self.act(out + self.inp_reinf(image))


class EESPNet(nn.Module):
    """ESPNetv2 encoder, levels 1-4 only (the reference deletes level5 and the classifier)."""

    def __init__(self, s: float = 2.0) -> None:
        super().__init__()
        if s not in CHANNELS_BY_SCALE:
            raise ValueError(
                f"ESPNetv2: unsupported width scale s={s}, use one of {sorted(CHANNELS_BY_SCALE)}"
            )
        ch = CHANNELS_BY_SCALE[s]
        r, b = _RECEPTIVE_LIMIT, _BRANCHES
        self.config = ch
        self.level1 = CBR(_REINF_CHANNELS, ch[0], 3, 2)
        self.level2_0 = DownSampler(ch[0], ch[1], k=b, r_lim=r[0])
        self.level3_0 = DownSampler(ch[1], ch[2], k=b, r_lim=r[1])
        self.level3 = nn.ModuleList(EESP(ch[2], ch[2], 1, k=b, r_lim=r[2]) for _ in range(_REPS[1]))
        self.level4_0 = DownSampler(ch[2], ch[3], k=b, r_lim=r[2])
        self.level4 = nn.ModuleList(EESP(ch[3], ch[3], 1, k=b, r_lim=r[3]) for _ in range(_REPS[2]))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Features at strides 2, 4, 8, 16."""
        l1 = self.level1(x)
        l2 = self.level2_0(l1, x)
        l3 = self.level3_0(l2, x)
        for layer in self.level3:
            l3 = layer(l3)
        l4 = self.level4_0(l3, x)
        for layer in self.level4:
            l4 = layer(l4)
        return l1, l2, l3, l4


# ----------------------------------------------------------------------------------------------
# Decoder layers (reference nn_layers/cnn_utils.py: nn.Sequential attributes cbr / br)
# ----------------------------------------------------------------------------------------------
class SeqCBR(nn.Module):
    """Conv -> BatchNorm -> PReLU held in one ``nn.Sequential`` named ``cbr``."""

    def __init__(self, n_in: int, n_out: int, k: int, groups: int = 1) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(n_in, n_out, k, 1, (k - 1) // 2, bias=False, groups=groups),
            nn.BatchNorm2d(n_out),
            nn.PReLU(n_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.cbr(x)


class SeqBR(nn.Module):
    """BatchNorm -> PReLU held in one ``nn.Sequential`` named ``br``."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.br = nn.Sequential(nn.BatchNorm2d(n_out), nn.PReLU(n_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.br(x)


class Shuffle(nn.Module):
    """Channel shuffle over ``groups`` groups."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class EfficientPyrPool(nn.Module):
    """Efficient pyramid pooling: depth-wise 3x3 at 5 scales, shuffle, merge, project."""

    SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)

    def __init__(self, in_planes: int, proj_planes: int, out_planes: int, last_br: bool = True):
        super().__init__()
        n = len(self.SCALES)
        self.projection_layer = SeqCBR(in_planes, proj_planes, 1)
        self.stages = nn.ModuleList(
            nn.Conv2d(proj_planes, proj_planes, 3, 1, 1, bias=False, groups=proj_planes)
            for _ in self.SCALES
        )
        self.merge_layer = nn.Sequential(
            SeqBR(proj_planes * n),
            Shuffle(groups=n),
            SeqCBR(proj_planes * n, proj_planes, 3, groups=proj_planes),
            nn.Conv2d(proj_planes, out_planes, 1, 1, bias=not last_br),
        )
        self.br = SeqBR(out_planes) if last_br else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.projection_layer(x)
        h, w = x.shape[2:]
        outs = []
        for scale, stage in zip(self.SCALES, self.stages, strict=True):
            hs, ws = max(math.ceil(h * scale), 5), max(math.ceil(w * scale), 5)
            if scale < 1.0:
                y = stage(F.adaptive_avg_pool2d(x, (hs, ws)))
                y = F.interpolate(y, (h, w), mode="bilinear", align_corners=True)
            elif scale > 1.0:
                y = stage(F.interpolate(x, (hs, ws), mode="bilinear", align_corners=True))
                y = F.adaptive_avg_pool2d(y, (h, w))
            else:
                y = stage(x)
            outs.append(y)
        out = self.merge_layer(torch.cat(outs, 1))
        return self.br(out) if self.br is not None else out


class EfficientPWConv(nn.Module):
    """Grouped 3x3 CBR gated by a global-pooled 1x1 sigmoid weight (encoder -> decoder merge)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.wt_layer = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(n_in, n_out, 1, bias=False), nn.Sigmoid()
        )
        self.expansion_layer = SeqCBR(n_in, n_out, 3, groups=math.gcd(n_in, n_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.expansion_layer(x) * self.wt_layer(x)


def _bn_prelu(n: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(n), nn.PReLU(n))


class ESPNetv2Segmentation(nn.Module):
    """ESPNetv2 encoder + bottom-up pyramid-pooling decoder; logits at input resolution."""

    def __init__(self, s: float = 2.0, num_classes: int = 20) -> None:
        super().__init__()
        self.base_net = EESPNet(s)
        cfg = self.base_net.config
        dec = (4 * _DEC_BASE_PLANES, 3 * _DEC_BASE_PLANES, 2 * _DEC_BASE_PLANES, num_classes)
        proj = min(num_classes // 2, _DEC_BASE_PLANES)
        self.num_classes = num_classes
        self.bu_dec_l1 = EfficientPyrPool(cfg[3], proj, dec[0])
        self.bu_dec_l2 = EfficientPyrPool(dec[0], proj, dec[1])
        self.bu_dec_l3 = EfficientPyrPool(dec[1], proj, dec[2])
        self.bu_dec_l4 = EfficientPyrPool(dec[2], proj, dec[3], last_br=False)
        self.merge_enc_dec_l2 = EfficientPWConv(cfg[2], dec[0])
        self.merge_enc_dec_l3 = EfficientPWConv(cfg[1], dec[1])
        self.merge_enc_dec_l4 = EfficientPWConv(cfg[0], dec[2])
        self.bu_br_l2 = _bn_prelu(dec[0])
        self.bu_br_l3 = _bn_prelu(dec[1])
        self.bu_br_l4 = _bn_prelu(dec[2])

    @staticmethod
    def _up2(x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ESPNetv2InputError(f"expected an N x 3 x H x W tensor, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ESPNetv2InputError(f"expected a normalised float tensor, got {x.dtype}")
        h, w = x.shape[2:]
        if h % _STRIDE or w % _STRIDE:
            raise ESPNetv2InputError(
                f"height and width must be multiples of {_STRIDE}, got {w}x{h}"
            )
        l1, l2, l3, l4 = self.base_net(x)
        y = self.bu_dec_l1(l4)
        y = self.bu_dec_l2(self.bu_br_l2(self._up2(y) + self.merge_enc_dec_l2(l3)))
        y = self.bu_dec_l3(self.bu_br_l3(self._up2(y) + self.merge_enc_dec_l3(l2)))
        y = self.bu_dec_l4(self.bu_br_l4(self._up2(y) + self.merge_enc_dec_l4(l1)))
        return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=True)


def espnetv2_seg(s: float = 2.0, num_classes: int = 20) -> ESPNetv2Segmentation:
    """Build ESPNetv2 for segmentation (reference ``espnetv2_seg`` with dataset='city').

    Weights are randomly initialised; load an official checkpoint with
    ``model.load_state_dict(torch.load(path, map_location="cpu"))``.
    """
    return ESPNetv2Segmentation(s=s, num_classes=num_classes)


# ----------------------------------------------------------------------------------------------
# Pre- and post-processing
# ----------------------------------------------------------------------------------------------
def _check_rgb(rgb_uint8: np.ndarray) -> None:
    if not isinstance(rgb_uint8, np.ndarray) or rgb_uint8.dtype != np.uint8:
        raise ESPNetv2InputError("expected an RGB uint8 numpy array")
    if rgb_uint8.ndim != 3 or rgb_uint8.shape[2] != 3:
        raise ESPNetv2InputError(f"expected an H x W x 3 RGB image, got shape {rgb_uint8.shape}")


def preprocess(
    rgb_uint8: np.ndarray,
    size: tuple[int, int] | None = None,
    interpolation: int | None = None,
) -> Tensor:
    """RGB uint8 HxWx3 -> normalised 1x3xHxW float tensor, optionally resized to ``size`` (W, H).

    ``interpolation=None`` resizes as the reference test script does (PIL ``BILINEAR``, which
    is antialiased when shrinking): ``F.interpolate(antialias=True)`` rounded back to 8 bits,
    within one grey level of PIL. Otherwise it is an OpenCV flag (e.g. ``cv2.INTER_AREA``)
    for ``cv2.resize``.
    """
    _check_rgb(rgb_uint8)
    x = torch.from_numpy(np.array(rgb_uint8, copy=True)).permute(2, 0, 1).unsqueeze(0)
    if size is not None and (size[0], size[1]) != (rgb_uint8.shape[1], rgb_uint8.shape[0]):
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ESPNetv2InputError(f"invalid size {size}, expected positive (W, H)")
        if interpolation is None:
            x = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True)
            x = x.round_().clamp_(0.0, 255.0)
        else:
            resized = cv2.resize(rgb_uint8, (w, h), interpolation=interpolation)
            x = torch.from_numpy(resized).permute(2, 0, 1).unsqueeze(0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


@torch.inference_mode()
def predict_train_ids(
    model: nn.Module,
    rgb_uint8: np.ndarray,
    size: tuple[int, int] | None = (1024, 512),
    interpolation: int | None = None,
) -> np.ndarray:
    """Segment one RGB frame: Cityscapes train ids (uint8, 255 = ignore) at the frame's size.

    As the reference test script: resize to ``size`` (W, H; None keeps the frame's size, see
    :func:`preprocess` for ``interpolation``), argmax at that resolution, map class 19
    (background) to 255, resize the label map back with nearest neighbour.
    """
    _check_rgb(rgb_uint8)
    h, w = rgb_uint8.shape[:2]
    param = next(model.parameters())
    x = preprocess(rgb_uint8, size, interpolation).to(device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        model.train(was_training)
    labels = logits[0].argmax(0).to(torch.uint8).cpu().numpy()
    labels[labels >= 19] = IGNORE_ID
    if labels.shape != (h, w):
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    return labels
