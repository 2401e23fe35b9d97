"""The shapes the cloud's device sees (no ROS): batch buckets, padding, the warm-up plan, and
LocalInference's padded batches against unpadded ones; the compile path's CUDA-graph copies."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from cloudseg.cloud.local import LocalInference
from cloudseg.cloud.shapes import (
    WarmupShape,
    batch_buckets,
    bucket_for,
    cudnn_benchmark,
    pad_batch,
    warmup_plan,
)


def test_buckets_and_padding():
    assert batch_buckets(8) == (1, 2, 4, 8)
    assert batch_buckets(6) == (1, 2, 4, 6)
    assert batch_buckets(1) == (1,)
    with pytest.raises(ValueError):
        batch_buckets(0)
    buckets = batch_buckets(8)
    assert [bucket_for(n, buckets) for n in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, 9]
    assert bucket_for(3, ()) == 3  # no buckets: every size as it comes
    frames = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    padded = pad_batch(frames, 4)
    assert padded.shape == (4, 2, 2, 3)
    assert (padded[:3] == frames).all() and (padded[3] == frames[2]).all()
    assert pad_batch(frames, 2) is frames


def test_warmup_plan_lists_every_bucket_scale_and_mode():
    plan = warmup_plan((2048, 1024), (2, 3, 4, 8), sr_scales=(2, 3, 4), batches=batch_buckets(8))
    shapes = {(s.scale, s.mode) for s in plan}
    assert shapes == {
        (1, "full"),
        *((s, "sr") for s in (2, 3, 4)),
        *((s, "bilinear") for s in (2, 3, 4, 8)),
    }
    assert len(plan) == len(shapes) * 4 == len(set(plan))
    for scale, mode in shapes:
        batches = [s.batch for s in plan if (s.scale, s.mode) == (scale, mode)]
        assert batches == [1, 2, 4, 8]
    assert WarmupShape(8, 3, "sr", (341, 682)) in plan  # the compressor's H // 3, W // 3
    assert WarmupShape(1, 1, "full", (1024, 2048)) in plan  # profiling: full resolution


def test_cudnn_benchmark_is_set_for_the_block_only():
    before = torch.backends.cudnn.benchmark
    with cudnn_benchmark(not before):
        assert torch.backends.cudnn.benchmark is (not before)
    assert torch.backends.cudnn.benchmark is before


@pytest.fixture(scope="module")
def lr_frames(shared_data):
    paths = sorted((shared_data / "sequences" / "aachen_seq0000").glob("*.jpg"))[:3]
    rgb = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
    return np.stack([cv2.resize(f, (64, 32), interpolation=cv2.INTER_AREA) for f in rgb])


@pytest.fixture
def service(weights_env):
    from cloudseg.cloud.service import CloudService

    return CloudService(device="cpu", cpu_max_width=128, scales=(4,))


def test_padded_batches_give_the_unbatched_results(service, lr_frames):
    """Three frames run as a bucket of four (the device sees 4); the padding's outputs are
    dropped and each frame's labels, restored image and overlay are those of running it
    alone without buckets (real ESPNetv2 and CARN-M on real frames)."""
    seen = []
    pipe = service.pipeline(4)
    real_restore = pipe.restore
    pipe.restore = lambda frames, mode: seen.append(len(frames)) or real_restore(frames, mode)
    bucketed = LocalInference(service, max_batch=8, bucketing=True)
    plain = LocalInference(service, max_batch=8, bucketing=False)
    got = bucketed.infer(lr_frames, 4, want_restored=True, want_overlay=True)
    assert seen == [4]
    assert got.labels.shape[0] == 3
    assert got.restored.shape[0] == 3 and got.overlay.shape[0] == 3
    for i in range(3):
        one = plain.infer(lr_frames[i : i + 1], 4, want_restored=True, want_overlay=True)
        assert np.array_equal(got.labels[i], one.labels[0])
        assert np.abs(got.restored[i].astype(int) - one.restored[0]).max() <= 1
        assert np.mean(got.overlay[i] == one.overlay[0]) > 0.99
    assert seen[1:] == [1, 1, 1]
    assert len(np.unique(got.labels)) > 2  # real labels, not one class everywhere


def test_warm_up_runs_the_plan_and_never_on_cpu(service):
    assert LocalInference(service).buckets == ()  # CPU: no padding by default
    inf = LocalInference(service, max_batch=4, bucketing=True, cudnn_benchmark=True)
    assert inf.warmup_s == 0.0 and not inf.benchmark  # CPU: no tuning, no warm-up
    plan = inf.plan((512, 256))
    assert {(s.scale, s.mode) for s in plan} == {(1, "full"), (4, "sr"), (4, "bilinear")}
    assert [s.batch for s in plan if s.mode == "sr"] == [1, 2, 4]
    unbucketed = LocalInference(service, max_batch=3, bucketing=False).plan((512, 256))
    assert [s.batch for s in unbucketed if s.mode == "sr"] == [1, 2, 3]
    calls = []
    inf.infer = lambda lr, scale, sr_bypass=False: calls.append((len(lr), scale, sr_bypass))
    inf.warm_up((512, 256))
    assert calls == [(s.batch, s.scale, s.mode == "bilinear") for s in plan]


def test_compiled_sr_outputs_outlive_the_next_call(weights_env):
    """The compile path (CUDA graphs) on a CPU stand-in: an SR function that, as a CUDA graph
    replay does, writes every call's output into the same buffers. A pyramid kept across
    another restore() keeps its own values."""
    from cloudseg.restore.pipeline import RestorationPipeline

    pipe = RestorationPipeline("carn_m", "espnetv2", seg_weights=None, allow_untrained=True)
    static: dict[int, torch.Tensor] = {}

    def replay(x, scales, clamp=True):  # one static output buffer per scale
        for s in scales:
            out = torch.nn.functional.interpolate(x, scale_factor=s, mode="nearest")
            static.setdefault(s, torch.empty_like(out)).copy_(out)
        return {s: static[s] for s in scales}

    pipe._sr_fn, pipe.compiled = replay, True
    a = np.full((1, 16, 32, 3), 40, np.uint8)
    b = np.full((1, 16, 32, 3), 200, np.uint8)
    first = pipe.restore(a, "sr")
    kept = {s: t.clone() for s, t in first.levels.items()}
    pipe.restore(b, "sr")
    for s, t in first.levels.items():
        assert torch.equal(t, kept[s]), f"level {s} was overwritten by the next call"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.compile + CUDA graphs: CUDA only")
def test_compiled_pipeline_on_cuda_keeps_pyramids(weights_env):
    from cloudseg.restore.pipeline import RestorationPipeline

    pipe = RestorationPipeline(
        "carn_m",
        "espnetv2",
        device="cuda",
        dtype="fp16",
        compile=True,
        seg_weights=None,
        allow_untrained=True,
    )
    a = np.full((1, 64, 128, 3), 40, np.uint8)
    b = np.full((1, 64, 128, 3), 200, np.uint8)
    for _ in range(3):  # record, then replay
        first = pipe.restore(a, "sr")
        kept = first.levels[1].clone()
        pipe.restore(b, "sr")
    assert torch.equal(first.levels[1], kept)
