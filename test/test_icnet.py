"""ICNet: checkpoint key compatibility, pyramid input, outputs, loss, and compute."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cloudseg.models.icnet import (
    ICNET_LOSS_WEIGHTS,
    INPUT_MEAN,
    INPUT_STD,
    ICNet,
    ICNetInputError,
    count_macs,
    icnet_loss,
    icnet_resnet50,
    make_pyramid,
)

KEYS_FILE = Path("weights/icnet_liminn_resnet50.keys.txt")
H, W = 128, 256


@pytest.fixture(scope="module")
def model() -> ICNet:
    torch.manual_seed(0)
    m = icnet_resnet50()
    # Non-trivial BatchNorm statistics, so eval mode is not an identity normalisation.
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


@pytest.fixture()
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, H, W)


def reference_forward(m: ICNet, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """liminn/ICNet-pytorch's forward, step by step, on our modules (incl. its wasted work)."""

    def base_forward(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p = m.pretrained
        t = p.maxpool(p.relu(p.bn1(p.conv1(t))))
        c1 = p.layer1(t)
        c2 = p.layer2(c1)
        c3 = p.layer3(c2)
        return c1, c2, c3, p.layer4(c3)

    x_sub1 = m.conv_sub1(x)
    _, x_sub2, _, _ = base_forward(
        F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=True)
    )
    _, _, _, x_sub4 = base_forward(
        F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=True)
    )
    feat = x_sub4
    for b in (1, 2, 3, 6):
        pooled = F.adaptive_avg_pool2d(x_sub4, b)
        feat = feat + F.interpolate(
            pooled, size=x_sub4.shape[2:], mode="bilinear", align_corners=True
        )
    head = m.head
    x_24, cls_24 = head.cff_24(feat, x_sub2)
    x_12, cls_12 = head.cff_12(x_24, x_sub1)
    up_x2 = head.conv_cls(F.interpolate(x_12, scale_factor=2, mode="bilinear", align_corners=True))
    up_x8 = F.interpolate(up_x2, scale_factor=4, mode="bilinear", align_corners=True)
    return up_x8, up_x2, cls_12, cls_24


def read_listing(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    listing = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        listing[key] = (dims, dtype)
    return listing


def test_state_dict_matches_checkpoint_listing(shared_data: Path) -> None:
    listing = read_listing(shared_data / KEYS_FILE)
    m = icnet_resnet50()
    ours = {k: (tuple(v.shape), str(v.dtype)) for k, v in m.state_dict().items()}
    assert ours == listing
    # A state_dict built only from the listing loads strictly and lands in the modules.
    torch.manual_seed(2)
    state = {
        k: torch.randn(shape) if dtype == "torch.float32" else torch.tensor(7, dtype=torch.int64)
        for k, (shape, dtype) in listing.items()
    }
    result = m.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(m.head.cff_24.conv_low[0].weight, state["head.cff_24.conv_low.0.weight"])
    assert torch.equal(
        m.pretrained.layer4[2].bn3.running_var, state["pretrained.layer4.2.bn3.running_var"]
    )


def test_counts_match_reference_header() -> None:
    m = icnet_resnet50()
    state = m.state_dict()
    assert len(state) == 377
    assert sum(v.numel() for v in state.values()) == 28_353_222
    assert sum(p.numel() for p in m.parameters()) == 28_298_376
    assert sum(p.numel() for p in m.pretrained.fc.parameters()) == 2_049_000
    assert (INPUT_MEAN, INPUT_STD) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.mark.parametrize("size", [(H, W), (100, 180)])
def test_eval_output_is_full_size_logits(model: ICNet, size: tuple[int, int]) -> None:
    torch.manual_seed(3)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 19, *size)
    assert torch.isfinite(out).all()
    assert out.std() > 0


def test_pyramid_input_equals_single_image(model: ICNet, image: torch.Tensor) -> None:
    levels = make_pyramid(image)
    lr, mr, hr = levels[4], levels[2], levels[1]
    assert lr.shape[-2:] == (H // 4, W // 4) and mr.shape[-2:] == (H // 2, W // 2)
    assert hr is image
    with torch.no_grad():
        single = model(image)
        pyramid = model(levels)
    assert torch.equal(single, pyramid)
    # The mr and lr branches really are used: another mr or lr changes the result.
    with torch.no_grad():
        other_mr = model({4: lr, 2: torch.zeros_like(mr), 1: hr})
        other_lr = model({4: torch.zeros_like(lr), 2: mr, 1: hr})
    assert not torch.allclose(single, other_mr) and not torch.allclose(single, other_lr)


def test_eval_matches_reference_forward(model: ICNet, image: torch.Tensor) -> None:
    with torch.no_grad():
        ref = reference_forward(model, image)
        out = model(image)
    assert torch.allclose(out, ref[0], atol=1e-6, rtol=0)


def test_train_outputs_match_reference(model: ICNet) -> None:
    torch.manual_seed(4)
    x = torch.randn(2, 3, H, W)
    model.train()
    try:
        with torch.no_grad():
            outs = model(x)
            ref = reference_forward(model, x)
    finally:
        model.eval()
    assert isinstance(outs, tuple) and len(outs) == 3
    shapes = [tuple(o.shape) for o in outs]
    assert shapes == [(2, 19, H // 4, W // 4), (2, 19, H // 8, W // 8), (2, 19, H // 16, W // 16)]
    for ours, theirs in zip(outs, ref[1:], strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)


def test_loss_weights_and_gradients() -> None:
    torch.manual_seed(5)
    outs = tuple(torch.randn(2, 19, H // s, W // s, requires_grad=True) for s in (4, 8, 16))
    target = torch.randint(0, 19, (2, H, W))
    target[:, :16] = 255
    loss = icnet_loss(outs, target)
    expected = sum(
        w * F.cross_entropy(o, target[:, ::s, ::s], ignore_index=255)
        for w, o, s in zip(ICNET_LOSS_WEIGHTS, outs, (4, 8, 16), strict=True)
    )
    assert ICNET_LOSS_WEIGHTS == (1.0, 0.4, 0.4)
    assert torch.isfinite(loss)
    assert torch.allclose(loss, expected)
    # The reference's 4-tuple (full-res first) gives the same loss.
    full = torch.randn(2, 19, H, W)
    assert torch.equal(icnet_loss((full, *outs), target), loss)
    loss.backward()
    assert all(o.grad is not None and o.grad.abs().sum() > 0 for o in outs)
    # Ignored rows get no gradient at 1/4.
    assert outs[0].grad[:, :, : 16 // 4].abs().sum() == 0


def test_loss_through_model_backward() -> None:
    torch.manual_seed(6)
    m = icnet_resnet50(num_classes=5).train()
    x = torch.randn(2, 3, 64, 64)
    target = torch.randint(0, 5, (2, 64, 64))
    loss = icnet_loss(m(x), target)
    loss.backward()
    assert torch.isfinite(loss)
    assert m.pretrained.layer4[2].conv3.weight.grad is not None  # lr branch
    assert m.head.cff_12.conv_high[0].weight.grad is not None  # hr branch


def test_bad_inputs_raise(model: ICNet, image: torch.Tensor) -> None:
    levels = make_pyramid(image)
    lr, mr, hr = levels[4], levels[2], levels[1]
    bad = [
        image[0],  # no batch dimension
        image[:, :1],  # one channel
        (image * 255).to(torch.uint8),  # not normalised
        torch.randn(1, 3, 16, 64),  # too small
        {4: mr, 2: lr, 1: hr},  # levels of the wrong sizes
        {4: lr, 1: hr},  # too few levels
        (lr, mr, hr),  # a tuple: whose order would it be?
        {4: lr, 2: mr[:, :, :-8], 1: hr},  # mr not 1/2 of hr
        {4: lr, 2: mr.double(), 1: hr},  # mixed dtypes
        "image",
    ]
    for x in bad:
        with pytest.raises(ICNetInputError):
            model(x)
    outs = tuple(torch.randn(1, 19, H // s, W // s) for s in (4, 8, 16))
    with pytest.raises(ICNetInputError, match="ignore_index"):
        icnet_loss(outs, torch.full((1, H, W), 19))
    with pytest.raises(ICNetInputError):
        icnet_loss(outs, torch.zeros(1, H, W))  # float target
    with pytest.raises(ICNetInputError):
        icnet_loss(outs[:2], torch.zeros(1, H, W, dtype=torch.long))


def test_macs_full_frame_on_meta_device() -> None:
    """114.1 GMACs at 2048x1024 (liminn: 294.5 with its unused layer3/4 on the 1/2 branch)."""
    with torch.device("meta"):
        m = icnet_resnet50()
    shape = (1, 3, 1024, 2048)
    macs = count_macs(m, shape)
    assert macs == pytest.approx(114.1e9, rel=1e-3)
    reference = count_macs(m, shape, forward=lambda x: reference_forward(m, x))
    assert reference == pytest.approx(294.5e9, rel=1e-3)
