"""Loss recovery in one round trip: the cloud asks for an IDR, the vehicle sends one.

After a lost or undecodable H.264 frame the cloud's decoder can show nothing until the next
IDR, which the encoder makes only every ``gop`` frames (17 by default: up to a second). So:

* cloud side, :class:`KeyframeRequester`: after every decode it says whether to ask the vehicle
  for an IDR (a `KeyframeRequest` on /cloudseg/keyframe_request) -- when the decoder waits for
  one (a gap in ``seq``, a corrupt frame, or a stream joined between IDRs), at most one request
  per ``min_interval_s`` (200 ms) while it waits, so a request that was itself lost is repeated
  and a flood of bad frames does not flood the vehicle;
* vehicle side, :class:`KeyframeOnRequest`: the compressor makes its next frame an IDR, unless
  it already sent one after the frame the request names (that IDR is on its way: one IDR per
  loss, not one per request), and at most one forced IDR per ``min_interval_s`` (a peer that
  floods requests cannot turn the stream into IDRs only);
* vehicle side, :class:`ViewerJoins`: a viewer that subscribes to the stream's viewer topics
  (Foxglove, ffmpeg image_transport) mid-stream asks the same way, so its first message is an
  IDR and it decodes at once (with intra refresh it would otherwise never see one).

Plain Python (no ROS): the nodes, ``cloudseg bench recover`` and the tests share it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

#: The cloud asks again at most this often while its decoder waits for an IDR.
REQUEST_INTERVAL_S = 0.2

#: Reasons a request carries.
LOST, UNDECODABLE, JOINED = "lost", "undecodable", "joined"


@dataclass(frozen=True)
class Ask:
    """One keyframe request to send: the frame that showed the problem, and why."""

    seq: int
    last_decoded_seq: int
    reason: str
    repeat: bool = False  # one was already sent for this wait (the first may have been lost)


class KeyframeRequester:
    """Cloud side: when to ask for an IDR (see the module's docstring)."""

    def __init__(
        self,
        min_interval_s: float = REQUEST_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval_s = float(min_interval_s)
        self.clock = clock
        self.last_request = -math.inf
        self.last_decoded_seq: int | None = None
        self.requests = 0
        self.asked = False  # since the last decoded frame

    def decoded(self, seq: int) -> None:
        """A frame was decoded: the stream is whole again."""
        self.last_decoded_seq = int(seq)
        self.last_request = -math.inf
        self.asked = False

    def failed(self, seq: int, undecodable: bool = False, now: float | None = None) -> Ask | None:
        """Frame ``seq`` could not be shown (the decoder waits for an IDR, or the payload was
        corrupt): the request to send now, or None (one was sent less than the interval ago)."""
        now = self.clock() if now is None else now
        if now - self.last_request < self.min_interval_s:
            return None
        self.last_request = now
        self.requests += 1
        if undecodable:
            reason = UNDECODABLE
        else:
            reason = LOST if self.last_decoded_seq is not None else JOINED
        last = -1 if self.last_decoded_seq is None else self.last_decoded_seq
        repeat, self.asked = self.asked, True
        return Ask(int(seq), max(last, 0), reason, repeat)


class KeyframeOnRequest:
    """Vehicle side: whether the next frame must be an IDR (see the module's docstring)."""

    def __init__(
        self,
        min_interval_s: float = REQUEST_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval_s = float(min_interval_s)
        self.clock = clock
        self.pending = False
        self.last_keyframe_seq: int | None = None
        self.last_forced = -math.inf
        self.honoured = self.ignored = 0

    def request(self, seq: int) -> bool:
        """The cloud asks, naming the frame ``seq`` that showed the problem; True when the
        next frame will be an IDR for it, False when an IDR sent after that frame is already
        on its way."""
        if self.last_keyframe_seq is not None and self.last_keyframe_seq > int(seq):
            self.ignored += 1
            return False
        if not self.pending:
            self.honoured += 1
        self.pending = True
        return True

    def take(self, now: float | None = None) -> bool:
        """For the frame about to be encoded: make it an IDR? (clears the request; one that
        comes sooner than ``min_interval_s`` after the last forced IDR waits for a later frame)"""
        if not self.pending:
            return False
        now = self.clock() if now is None else now
        if now - self.last_forced < self.min_interval_s:
            return False
        self.pending, self.last_forced = False, now
        return True

    def sent(self, seq: int, keyframe: bool) -> None:
        """A frame went out (an IDR or not)."""
        if keyframe:
            self.last_keyframe_seq = int(seq)


class ViewerJoins:
    """Vehicle side: which viewer topics a frame goes to, and when a new viewer needs an IDR.

    Before each frame the node gives the topics' subscriber counts (`joined`): a count that
    went up since the last frame is a new subscriber, so the node asks `KeyframeOnRequest` for
    an IDR. Until an IDR goes out, that topic gets nothing (`targets`): a late joiner's first
    message is a key frame (the request may wait out the forced-IDR interval). A topic without
    subscribers gets nothing either: no message is built for it.
    """

    def __init__(self, topics: Iterable[str]) -> None:
        self.counts = dict.fromkeys(topics, 0)
        self.waiting: set[str] = set()  # topics with a new subscriber and no IDR since
        self.sent = dict.fromkeys(self.counts, 0)  # messages built and published per topic

    def joined(self, counts: Mapping[str, int]) -> bool:
        """The subscriber counts now; True when one went up (make the next frame an IDR)."""
        new = {t for t, n in counts.items() if n > self.counts.get(t, 0)}
        self.counts.update(counts)
        self.waiting |= new
        return bool(new)

    def targets(self, keyframe: bool) -> list[str]:
        """The topics this frame goes to (`keyframe`: it is an IDR); counts them as sent."""
        if keyframe:
            self.waiting.clear()
        out = [t for t, n in self.counts.items() if n > 0 and t not in self.waiting]
        for t in out:
            self.sent[t] += 1
        return out
