"""Loss recovery in one round trip (plain logic with the real encoder and decoder)."""

from __future__ import annotations

import cv2
import numpy as np

from cloudseg.media.stream import CompressorSettings, FrameCompressor, StreamDecoder
from cloudseg.recovery import JOINED, LOST, UNDECODABLE, KeyframeOnRequest, KeyframeRequester


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    base = cv2.resize(rng.integers(0, 255, (16, 32, 3), dtype=np.uint8), (512, 256))
    return [np.roll(base, 4 * i, axis=1) for i in range(n)]


def test_requester_asks_at_most_once_per_interval_while_waiting():
    now = [0.0]
    req = KeyframeRequester(min_interval_s=0.2, clock=lambda: now[0])
    first = req.failed(3)
    assert (first.seq, first.reason) == (3, JOINED)  # nothing decoded yet
    req.decoded(4)
    ask = req.failed(6)
    assert (ask.seq, ask.last_decoded_seq, ask.reason) == (6, 4, LOST)
    now[0] = 0.1
    assert req.failed(7) is None  # asked 100 ms ago
    now[0] = 0.25
    again = req.failed(8, undecodable=True)  # the first or its IDR was lost: again
    assert again.reason == UNDECODABLE and again.repeat and not ask.repeat
    req.decoded(9)
    assert req.failed(11) is not None  # a new loss: at once
    assert req.requests == 4


def test_vehicle_sends_one_idr_per_loss_and_at_most_one_per_interval():
    now = [10.0]
    honour = KeyframeOnRequest(min_interval_s=0.2, clock=lambda: now[0])
    honour.sent(0, keyframe=True)
    assert honour.request(5) and honour.request(6)  # two requests before the next frame
    assert honour.take() and not honour.take()  # one IDR
    honour.sent(7, keyframe=True)
    assert not honour.request(6)  # the IDR at 7 is on its way
    assert honour.request(7)  # the IDR itself was bad
    assert not honour.take()  # 0 ms after the last forced IDR: at a later frame
    now[0] = 10.25
    assert honour.take()
    assert (honour.honoured, honour.ignored) == (2, 1)


def test_a_requested_keyframe_restarts_decoding_at_the_next_frame():
    frames = _frames(12)
    comp = FrameCompressor(CompressorSettings(scale=2, gop=100))
    decoder = StreamDecoder()
    requester, honour = KeyframeRequester(clock=lambda: 0.0), KeyframeOnRequest(0.0)
    shown = []
    for seq, rgb in enumerate(frames):
        c = comp.compress(rgb, keyframe=honour.take())
        honour.sent(seq, c.keyframe)
        if seq == 3:
            continue  # lost on the link
        lr, _ = decoder.decode(c.payload, c.codec, seq, c.scale, c.width, c.height)
        if lr is None:
            ask = requester.failed(seq)
            if ask is not None:
                honour.request(ask.seq)  # arrives before the next frame (round trip < 59 ms)
        else:
            requester.decoded(seq)
            shown.append(seq)
    # 4 depends on the lost 3; 5 is the IDR asked for at 4
    assert shown == [0, 1, 2, *range(5, 12)]
    assert requester.requests == 1 and honour.honoured == 1
