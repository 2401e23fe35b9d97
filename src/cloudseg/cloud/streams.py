"""Per-stream state of the cloud: one entry per vehicle, keyed by its namespace (no rclpy).

A vehicle launched under namespace ``/car1`` sends its frames on ``/car1/cloudseg/frames``
and gets its results on ``/car1/cloudseg/labels`` etc.: the stream id is the namespace
(``/`` for a vehicle in the root namespace: today's single-vehicle graphs). Each stream has
its own decoders (H.264 reference pictures of two vehicles must never mix), its own sequence
tracking and keyframe-request state, its own counters for FrameStats, and the time it was
last seen; a stream idle for ``idle_s`` is forgotten (its decoders freed), so memory stays
bounded however many vehicles come and go.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from cloudseg.graph import FRAMES_TOPIC
from cloudseg.guard import BadInput, FrameLimits, LogRate
from cloudseg.media.stream import StreamDecoder
from cloudseg.recovery import Ask, KeyframeRequester

FRAMES_SUFFIX = FRAMES_TOPIC
"""The frames topic of a stream, relative to its namespace."""


def normalise_namespace(namespace: str) -> str:
    """``""``, ``"/"`` -> ``"/"``; ``"car1"``, ``"/car1/"`` -> ``"/car1"``."""
    parts = [p for p in str(namespace).split("/") if p]
    return "/" + "/".join(parts)


def stream_topic(namespace: str, topic: str) -> str:
    """The absolute name of ``topic`` in ``namespace``: the topic may be given relative
    (``cloudseg/frames``) or absolute (``/cloudseg/frames``, as the graph names it today);
    either way it is placed under the namespace (``/car1`` -> ``/car1/cloudseg/frames``; the
    root namespace leaves it as it is)."""
    ns = normalise_namespace(namespace)
    name = topic.strip("/")
    if not name:
        raise ValueError(f"empty topic name {topic!r}")
    return f"/{name}" if ns == "/" else f"{ns}/{name}"


def namespace_of(topic: str, suffix: str = FRAMES_SUFFIX) -> str | None:
    """The namespace of a stream topic (``/car1/cloudseg/frames`` -> ``/car1``, the root's
    ``/cloudseg/frames`` -> ``/``), or None when ``topic`` is not one of ``suffix``."""
    suffix = "/" + suffix.strip("/")
    if topic == suffix:
        return "/"
    if topic.endswith(suffix) and topic.startswith("/"):
        return normalise_namespace(topic[: -len(suffix)])
    return None


def check_stream_id(claimed: str, namespace: str) -> None:
    """A Frame's ``stream_id`` against the namespace of the topic it came on: empty (a vehicle
    that does not fill it) is accepted; anything else must name that namespace (BadInput
    "stream": a frame published into another vehicle's stream)."""
    if claimed and normalise_namespace(claimed) != normalise_namespace(namespace):
        raise BadInput(
            f"stream_id {claimed!r} disagrees with the topic's namespace {namespace!r}", "stream"
        )


@dataclass
class Decoded:
    """What one frame of a stream gave: the LR picture (None when dropped or waiting for an
    IDR), the decode time, the keyframe request to send (or None) and a line to log."""

    lr: np.ndarray | None
    decode_ms: float = 0.0
    ask: Ask | None = None
    log: str | None = None  # info: a loss was seen, or decoding resumed at an IDR


@dataclass
class Stream:
    """The cloud's state of one vehicle stream."""

    id: str
    decoder: StreamDecoder
    last_seen: float
    keyframes: KeyframeRequester = field(default_factory=KeyframeRequester)
    waiting_for_idr: bool = False
    frames_received: int = 0
    bytes_received: int = 0
    frames_skipped: int = 0  # replaced by a newer frame of the stream before inference
    frames_done: int = 0  # results routed back
    pending_ask: Ask | None = None  # left by a frame that failed to decode
    log_rate: LogRate = field(default_factory=LogRate)  # loss / resume / IDR-request lines

    def decode(
        self, payload: bytes, codec: str, seq: int, scale: int, width: int, height: int
    ) -> Decoded:
        """Decode one frame of this stream (BadInput for a frame that cannot be used: the
        caller drops it with the reason). While the H.264 decoder waits for an IDR (a loss, a
        corrupt frame, a stream joined between IDRs) ``ask`` says when to ask the vehicle for
        one (at most every 200 ms)."""
        self.frames_received += 1
        self.bytes_received += len(payload)
        try:
            lr, ms = self.decoder.decode(payload, codec, seq, scale, width, height)
        except BadInput:
            if codec == "h264" and self.decoder.waiting_for_idr():
                self.waiting_for_idr = True
                self.pending_ask = self.keyframes.failed(seq, undecodable=True)
            raise
        if lr is None:
            line = None
            if not self.waiting_for_idr:
                line = self.log_rate.line(
                    "lost", f"frame {seq}: a frame was lost; waiting for the next IDR frame"
                )
            self.waiting_for_idr = True
            return Decoded(None, 0.0, self.keyframes.failed(seq), line)
        line = None
        if self.waiting_for_idr:
            line = self.log_rate.line("resumed", f"frame {seq}: IDR received, decoding again")
        self.waiting_for_idr = False
        self.keyframes.decoded(seq)
        return Decoded(lr, ms, None, line)

    def take_ask(self) -> Ask | None:
        """The keyframe request left by a frame that failed to decode (once)."""
        ask, self.pending_ask = self.pending_ask, None
        return ask


class StreamTable:
    """Streams by id, created on their first frame, forgotten after ``idle_s`` without one.

    ``limits``: what every stream's decoders accept (`FrameLimits`). ``clock``: monotonic
    seconds (tests pass their own). Not thread-safe: the node's executor thread owns it (the
    batcher's jobs carry copies of the counters they need)."""

    def __init__(
        self,
        limits: FrameLimits | None = None,
        idle_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or FrameLimits()
        self.idle_s = float(idle_s)
        self.clock = clock
        self._streams: dict[str, Stream] = {}
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id: str) -> bool:
        return normalise_namespace(stream_id) in self._streams

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self._streams.values()))

    def get(self, stream_id: str) -> Stream | None:
        return self._streams.get(normalise_namespace(stream_id))

    def seen(self, stream_id: str) -> Stream:
        """The stream (created on first sight) with its last-seen time set to now."""
        sid = normalise_namespace(stream_id)
        now = self.clock()
        stream = self._streams.get(sid)
        if stream is None:
            stream = self._streams[sid] = Stream(sid, StreamDecoder(self.limits), now)
        stream.last_seen = now
        return stream

    def forget_idle(self) -> list[Stream]:
        """Forget the streams not seen for ``idle_s`` seconds; returns them (to log)."""
        now = self.clock()
        idle = [s for s in self._streams.values() if now - s.last_seen >= self.idle_s]
        for stream in idle:
            del self._streams[stream.id]
        self.forgotten += len(idle)
        return idle
