"""The offline accuracy of `cloudseg bench adapt` on real frames through the real encoder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg.bench.adapt_score import FrameMatcher, score_events
from cloudseg.media.stream import FrameCompressor, default_compressor_settings


@pytest.fixture(scope="module")
def frames(shared_data: Path) -> list[np.ndarray]:
    folder = shared_data / "sequences" / "aachen_seq0000"
    files = sorted(folder.glob("*.jpg"))[:8]
    return [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]


def _stream(frames: list[np.ndarray], order: list[int], gop: int = 17):
    """Events and payloads as the probe writes them, for frames sent in `order`."""
    compressor = FrameCompressor(default_compressor_settings(scale=4, gop=gop))
    events, payloads = [], b""
    for seq, i in enumerate(order):
        c = compressor.compress(frames[i])
        events.append(
            {"e": "sent", "t": float(seq), "seq": seq, "bytes": len(c.payload),
             "scale": c.scale, "off": len(payloads), "len": len(c.payload), "codec": c.codec,
             "key": c.keyframe, "w": c.width, "h": c.height, "knob": 0}
        )  # fmt: skip
        payloads += c.payload
    return events, payloads


def test_matcher_finds_the_original_of_a_decoded_frame(frames):
    events, payloads = _stream(frames, [5, 2, 7, 0])
    from cloudseg.media.stream import StreamDecoder

    decoder, match = StreamDecoder(), FrameMatcher(frames)
    found = []
    for e in events:
        data = payloads[e["off"] : e["off"] + e["len"]]
        lr, _ = decoder.decode(data, e["codec"], e["seq"], e["scale"], e["w"], e["h"])
        found.append(match(lr))
    assert found == [5, 2, 7, 0]


def test_scores_what_came_back_and_skips_what_a_loss_broke(frames):
    order = list(range(8))
    events, payloads = _stream(frames, order)
    # each frame's result is back 0.5 s after it was sent, except frame 3 (lost): the P-frames
    # after it cannot be decoded, as in the cloud
    events += [{"e": "back", "t": e["t"] + 0.5, "seq": e["seq"]} for e in events if e["seq"] != 3]
    reference = [np.full((8, 16), i % 19, np.uint8) for i in range(len(frames))]
    calls = []

    def segment(lr: np.ndarray, scale: int, sr: bool) -> np.ndarray:
        calls.append((lr.shape, scale, sr))
        return reference[FrameMatcher(frames)(lr)]  # a perfect segmenter

    steps = [(0.0, 4.0), (4.0, 100.0)]
    scores = score_events(events, payloads, steps, 0.0, frames, reference, segment, 1.0)
    assert scores.steps_scored == [3, 0]  # seqs 0, 1, 2 arrive in step 0; 4..7 never decode
    assert scores.miou == pytest.approx(1.0) and scores.steps_miou[1] is None
    assert calls[0] == ((256, 512, 3), 4, True)

    def wrong(lr: np.ndarray, scale: int, sr: bool) -> np.ndarray:
        return np.full((8, 16), 18, np.uint8)

    assert score_events(events, payloads, steps, 0.0, frames, reference, wrong).miou < 0.5


def test_interval_and_sr_bypass(frames):
    events, payloads = _stream(frames, list(range(8)))
    events += [{"e": "back", "t": e["t"] + 0.1, "seq": e["seq"]} for e in events]
    events.append({"e": "knob", "t": 0.0, "seq": 0, "scale": 4, "sr_bypass": True})
    reference = [np.zeros((8, 16), np.uint8)] * len(frames)
    seen = []

    def segment(lr: np.ndarray, scale: int, sr: bool) -> np.ndarray:
        seen.append(sr)
        return reference[0]

    scores = score_events(events, payloads, [(0.0, 100.0)], 0.0, frames, reference, segment, 3.0)
    assert scores.scored == 3  # arrivals at 0.1, 3.1, 6.1 s
    assert seen == [False, False, False]  # knob 0 bypassed SR
