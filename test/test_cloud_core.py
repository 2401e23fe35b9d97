"""The multi-vehicle cloud core without ROS: stream table, batcher, router, inference."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from cloudseg.cloud import local as local_mod
from cloudseg.cloud.batcher import Batcher
from cloudseg.cloud.inference import BatchResult
from cloudseg.cloud.local import LocalInference, blend_overlay
from cloudseg.cloud.router import StreamFrame, frame_stats, route
from cloudseg.cloud.streams import (
    StreamTable,
    check_stream_id,
    namespace_of,
    stream_topic,
)
from cloudseg.guard import BadInput
from cloudseg.media.stream import CompressorSettings, FrameCompressor
from support import wait_until


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def frames(shared_data):
    folder = shared_data / "sequences" / "aachen_seq0000"
    paths = sorted(folder.glob("*.jpg"))[:3]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


def test_stream_topic_joins_namespaces_with_relative_or_absolute_names():
    assert stream_topic("/car1", "cloudseg/frames") == "/car1/cloudseg/frames"
    assert stream_topic("/car1", "/cloudseg/frames") == "/car1/cloudseg/frames"
    assert stream_topic("car1/", "/cloudseg/labels") == "/car1/cloudseg/labels"
    assert stream_topic("/", "cloudseg/frames") == "/cloudseg/frames"
    assert stream_topic("", "/cloudseg/frames") == "/cloudseg/frames"
    assert stream_topic("/fleet/car2", "cloudseg/stats") == "/fleet/car2/cloudseg/stats"
    assert namespace_of("/car1/cloudseg/frames") == "/car1"
    assert namespace_of("/cloudseg/frames") == "/"
    assert namespace_of("/fleet/car2/cloudseg/frames") == "/fleet/car2"
    assert namespace_of("/car1/cloudseg/labels") is None
    assert namespace_of("/car1/xcloudseg/frames") is None
    check_stream_id("", "/car1")  # a vehicle that does not say: accepted
    check_stream_id("/car1", "/car1/")
    with pytest.raises(BadInput) as info:
        check_stream_id("/car2", "/car1")
    assert info.value.kind == "stream"


def test_streams_keep_their_own_decoders_and_idle_ones_are_forgotten(frames):
    """Two vehicles' H.264 streams interleaved: each decodes from its own reference chain
    (one shared decoder would mix them); a stream idle for idle_s is forgotten."""
    clock = Clock()
    table = StreamTable(idle_s=10.0, clock=clock)
    settings = CompressorSettings(scale=4, codec="h264", preset="ultrafast")
    enc = {"/car1": FrameCompressor(settings), "/car2": FrameCompressor(settings)}
    images = {"/car1": frames, "/car2": [f[:, ::-1].copy() for f in frames]}  # mirrored
    for i in range(3):
        for sid in enc:
            c = enc[sid].compress(images[sid][i])
            d = table.seen(sid).decode(c.payload, c.codec, i, c.scale, c.width, c.height)
            assert d.lr is not None and d.ask is None
            small = cv2.resize(images[sid][i], (512, 256), interpolation=cv2.INTER_AREA)
            psnr = cv2.PSNR(small, d.lr)
            assert psnr > 28, (sid, i, psnr)
    assert len(table) == 2 and table.get("/car1").frames_received == 3
    # a loss in car1's stream: only car1 waits for an IDR and asks for one
    c = enc["/car1"].compress(frames[0])
    c = enc["/car1"].compress(frames[1])  # seq 4: seq 3 was lost
    d = table.seen("/car1").decode(c.payload, c.codec, 4, c.scale, c.width, c.height)
    assert d.lr is None and d.ask is not None and d.ask.reason == "lost" and "lost" in d.log
    assert not table.get("/car2").waiting_for_idr
    clock.t += 5.0
    table.seen("/car2")
    clock.t += 6.0
    forgotten = table.forget_idle()
    assert [s.id for s in forgotten] == ["/car1"] and "/car2" in table and len(table) == 1
    assert table.forgotten == 1


def test_a_stream_that_loses_often_logs_a_line_per_kind_then_one_per_10_s(frames):
    """A lossy (or hostile) stream: 100 loss/resume cycles within a few seconds give one
    "lost" line and one "IDR received" line, then nothing until 10 s later, when the next
    line says how many it stands for."""
    clock = Clock()
    table = StreamTable(clock=clock)
    stream = table.seen("/car1")
    stream.log_rate.clock = clock
    compressor = FrameCompressor(CompressorSettings(scale=4, codec="h264", preset="ultrafast"))
    idr = compressor.compress(frames[0])
    p_frame = compressor.compress(frames[1])
    lines, seq = [], 0
    for _ in range(100):
        for c, gap in ((idr, 1), (p_frame, 2)):  # an IDR, then a P-frame after a lost one
            seq += gap
            d = stream.decode(c.payload, c.codec, seq, c.scale, c.width, c.height)
            lines += [d.log] if d.log else []
        clock.t += 0.05
    assert len(lines) == 2, lines
    assert "a frame was lost" in lines[0] and "IDR received" in lines[1]
    clock.t += 10.0
    seq += 1
    d = stream.decode(idr.payload, idr.codec, seq, idr.scale, idr.width, idr.height)
    assert "IDR received" in d.log and "more of this kind since the last report" in d.log


def _batcher(clock, **kw):
    return Batcher(lambda g: None, key=lambda item: item[0], clock=clock, **kw)


def test_batcher_newest_per_stream_max_batch_and_grouping():
    clock = Clock()
    b = _batcher(clock, max_batch=3, max_wait_ms=50.0)
    b.offer("/a", ("small", 1))
    b.offer("/a", ("small", 2))  # replaces the waiting one: skipped
    assert b.pending() == 1 and b.skipped == {"/a": 1}
    b.offer("/b", ("large", 1))
    assert b.poll() == []  # 2 < max_batch and nothing waited 50 ms
    b.offer("/c", ("small", 1))
    groups = b.poll()  # max_batch streams waiting: due at once
    assert [g.key for g in groups] == ["small", "large"]
    assert [[(e.stream_id, e.item[1]) for e in g.entries] for g in groups] == [
        [("/a", 2), ("/c", 1)],
        [("/b", 1)],
    ]
    assert all(g.batch_size == 3 for g in groups)
    assert groups[0].entries[0].skipped == 1 and b.pending() == 0


def test_batcher_max_wait_and_keep():
    clock = Clock()
    b = Batcher(
        lambda g: None,
        key=lambda item: 0,
        max_batch=8,
        max_wait_ms=5.0,
        clock=clock,
        keep=lambda item: item == "profiling",
    )
    b.offer("/a", "profiling")
    assert not b.offer("/a", "newer")  # the profiling frame stays; the newer one is skipped
    clock.t += 0.004
    assert b.poll() == []
    clock.t += 0.002  # 6 ms after the first frame: due however empty the batch
    (group,) = b.poll()
    assert [e.item for e in group.entries] == ["profiling"] and group.batch_size == 1
    assert b.skipped == {"/a": 1}


def test_batcher_worker_runs_batches_of_many_streams():
    seen: list[list[str]] = []
    done = threading.Event()

    def handle(group):
        seen.append([e.stream_id for e in group.entries])
        if sum(map(len, seen)) >= 4:
            done.set()

    b = Batcher(handle, key=lambda item: 0, max_batch=4, max_wait_ms=200.0).start()
    try:
        for sid in ("/a", "/b", "/c", "/d"):
            b.offer(sid, sid)
        assert done.wait(5.0)
        assert seen == [["/a", "/b", "/c", "/d"]]  # one batch of four, not four of one
        t0 = time.monotonic()
        b.offer("/a", "again")
        wait_until(lambda: len(seen) >= 2, 5, poll_s=0.01)
        assert seen[1] == ["/a"] and time.monotonic() - t0 >= 0.19  # waited max_wait
        assert b.batch_mean == 2.5
    finally:
        assert b.stop(5.0)


def _frame(sid, seq, width=2048, height=1024):
    return StreamFrame(
        stream_id=sid,
        header=None,
        seq=seq,
        scale=4,
        codec="h264",
        width=width,
        height=height,
        payload_bytes=100,
        lr=np.zeros((256, 512, 3), np.uint8),
        decode_ms=1.0,
        transport_ms=2.0,
        t0=time.perf_counter(),
        frames_received=seq + 1,
    )


def test_router_sends_each_result_to_its_own_stream_at_its_camera_size():
    frames = [_frame("/car1", 5), _frame("/car2", 9, width=1024, height=512)]
    labels = np.stack([np.full((256, 512), 1, np.uint8), np.full((256, 512), 2, np.uint8)])
    overlay = np.zeros((2, 256, 512, 3), np.uint8)
    result = BatchResult(labels, None, 12.0, overlay=overlay, sr_ms=4.0, mode="sr")
    out = route(frames, result, batch_size=3, skipped=[0, 4])
    assert [r.stream_id for r in out] == ["/car1", "/car2"]
    assert out[0].labels.shape == (1024, 2048) and set(np.unique(out[0].labels)) == {1}
    assert out[1].labels.shape == (512, 1024) and set(np.unique(out[1].labels)) == {2}
    assert out[1].stats["stream_id"] == "/car2" and out[1].stats["seq"] == 9
    assert out[1].stats["frames_skipped"] == 4 and out[0].stats["batch_size"] == 3
    assert out[0].stats["sr_ms"] == 2.0 and not out[0].stats["sr_bypass"]
    assert out[0].restored is None and out[0].overlay.shape == (256, 512, 3)
    with pytest.raises(ValueError):
        route(frames[:1], result, 1, [0])
    # the minimal result another Inference (a Triton client) gives: labels, no extras
    plain = route(frames, BatchResult(labels, None, 5.0), batch_size=2, skipped=[0, 0])
    assert plain[0].overlay is None and plain[0].restored is None
    assert not plain[0].stats["sr_bypass"] and plain[1].labels.shape == (512, 1024)


def test_frame_stats_of_the_receiver_and_of_a_segmentation_only_report():
    """The node that received the frame reports it (codec, counters); the split cloud's
    segmentation node reports segmentation only (no codec: not a receiver report)."""
    from cloudseg.msg import FrameStats
    from cloudseg.stream_stats import receiver_report

    received = frame_stats(_frame("/car1", 7), sr_bypass=False, sr_ms=3.0, frames_skipped=2)
    assert received["codec"] == "h264" and received["seq"] == 7 and received["stream_id"] == "/car1"
    assert received["frames_received"] == 8 and received["frames_skipped"] == 2
    assert received["decode_ms"] == 1.0 and received["batch_size"] == 0
    t0 = time.perf_counter() - 0.05
    seg = frame_stats(None, t0=t0, seq=7, scale=4, sr_bypass=True, sr_ms=0.0, segmentation_ms=9.0)
    assert "codec" not in seg and seg["seq"] == 7 and seg["total_ms"] >= 50.0
    # the message takes them as they are
    assert receiver_report(FrameStats(**received).codec)
    assert not receiver_report(FrameStats(**seg).codec)


def test_device_overlay_matches_the_host_overlay():
    from cloudseg.restore.labels import overlay as host_overlay

    rng = np.random.default_rng(0)
    import torch

    rgb = rng.integers(0, 256, (2, 16, 32, 3), dtype=np.uint8)
    labels = rng.choice([0, 5, 13, 18, 255], (2, 16, 32)).astype(np.uint8)
    dev = blend_overlay(torch.from_numpy(rgb), torch.from_numpy(labels), 0.4).numpy()
    for i in range(2):
        ref = host_overlay(rgb[i], labels[i], 0.4)
        assert np.abs(dev[i].astype(int) - ref.astype(int)).max() <= 1
        assert (dev[i][labels[i] == 255] == rgb[i][labels[i] == 255]).all()


def test_local_inference_is_batched_and_makes_only_what_is_asked(shared_data, frames, monkeypatch):
    """One call for a batch of two streams' frames: labels per frame (the real ESPNetv2 on
    real frames: road at the bottom); the restored image and the overlay only when asked for
    (the blend runs only then)."""
    from cloudseg.cloud.service import CloudService

    monkeypatch.setenv("CLOUDSEG_WEIGHTS", str(shared_data / "weights"))
    service = CloudService(device="cpu", cpu_max_width=256)
    blends = []
    real_blend = local_mod.blend_overlay

    def spy(*args, **kw):
        blends.append(1)
        return real_blend(*args, **kw)

    monkeypatch.setattr(local_mod, "blend_overlay", spy)
    inf = LocalInference(service)
    lr = np.stack([cv2.resize(f, (512, 256), interpolation=cv2.INTER_AREA) for f in frames[:2]])
    lean = inf.infer(lr, 4)
    assert lean.labels.shape == (2, 128, 256) and lean.labels.dtype == np.uint8
    assert lean.restored is None and lean.overlay is None and not blends
    assert lean.mode == "sr" and lean.ms > 0
    assert np.mean(lean.labels[:, 110:, 80:180] == 0) > 0.5  # the road in front of the car
    full = inf.infer(lr, 4, sr_bypass=True, want_restored=True, want_overlay=True)
    assert full.mode == "bilinear" and len(blends) == 1
    assert full.restored.shape == (2, 128, 256, 3) and full.overlay.shape == (2, 128, 256, 3)
    only_overlay = inf.infer(lr[:1], 4, want_overlay=True)
    assert only_overlay.restored is None and only_overlay.overlay.shape == (1, 128, 256, 3)
