"""What both cloud SR nodes share: receiving vehicle streams.

Each stream (a vehicle's namespace: frames on `<ns>/cloudseg/frames`) has its own
subscriptions, decoders, sequence tracking, keyframe requests, counters
(`cloudseg.cloud.streams`) and Knob settings. Frames are decoded as they arrive, in the
subscription callback (that keeps the H.264 reference chain); each decoded frame is handed to
the node's `take` (a newest-first worker or a batcher), which restores it later. SR or bilinear
upsampling, as the `restore` parameter and then the stream's Knob (`sr_bypass`) say.

Frames come from the wire and are not trusted: stamps, codec, scale and claimed size are
checked (`cloudseg.guard.FrameLimits`: `max_width`, `max_height`, `scales`) before anything is
decoded or allocated, and a bad frame is dropped, counted and logged (rate-limited) without
leaving the callback; so is a Frame whose `stream_id` names another namespace than its
topic's (kind "stream"). When the H.264 decoder waits for an IDR (a lost frame, a corrupt one,
a stream joined between IDRs) the node asks the vehicle for one on the stream's
cloudseg/keyframe_request (`cloudseg.recovery`: at most one request per 200 ms while it waits).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

from rclpy.node import Node
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import Image

from cloudseg.cloud.router import StreamFrame
from cloudseg.cloud.streams import StreamTable, check_stream_id, normalise_namespace, stream_topic
from cloudseg.control.knob import check_knob
from cloudseg.graph import FRAMES_TOPIC, KEYFRAME_REQUEST_TOPIC, KNOB_TOPIC, RESTORED_TOPIC, SR
from cloudseg.guard import BadInput, FrameLimits, check_stamp
from cloudseg.msg import Frame, KeyframeRequest, Knob
from cloudseg.nodes.common import boundary, drop_input, qos_for
from cloudseg.nodes.parameters import declare_parameters
from cloudseg.recovery import Ask


@dataclass
class StreamEndpoints:
    """A stream's topics on the node (and, in the cloud process, the segmentation node's
    publishers of its results), with the settings of its Knob."""

    namespace: str
    fixed: bool  # listed (or the root's): kept while the node runs
    subscriptions: list = field(default_factory=list)
    keyframe_pub: object = None
    restored_pub: object = None
    outputs: object = None  # the segmentation node's publishers (cloud process)
    knob_scale: int = 0  # the stream's Knob (0: none yet): a scale-1 frame is then profiling
    knob_crf: int | None = None
    sr_bypass: bool | None = None  # the Knob's; None: the node's `restore` setting

    def label(self, what: str) -> str:
        """`what` as the log names it: with the stream's namespace unless it is the root."""
        return what if self.namespace == "/" else f"{self.namespace} {what}"


class CloudIngest(Node):
    """The `sr` node's stream handling; a subclass restores what `take` gets. ``composed``:
    it runs in the cloud process (its parameters are `SR.declared(composed)`)."""

    def __init__(self, composed: bool) -> None:
        super().__init__(SR.name)
        #: the stream of the node's own namespace (topics by their relative names): the root
        #: stream "/" unless the node runs under a namespace
        self.home = normalise_namespace(self.get_namespace())
        self.params = p = declare_parameters(self, SR, composed=composed)
        self.sr_bypass = p["restore"] == "bilinear"
        self.limits = FrameLimits(p["max_width"], p["max_height"], tuple(p["scales"]))
        # (composed only: on its own the node never forgets its one stream)
        idle_s = p.get("stream_idle_s", SR.param("stream_idle_s").default)
        self.streams = StreamTable(self.limits, idle_s)
        self.endpoints: dict[str, StreamEndpoints] = {}

    def take(self, namespace: str, frame: StreamFrame) -> None:
        """A decoded frame of a stream, to restore (the subclass's worker or batcher)."""
        raise NotImplementedError

    def stream_outputs(self, namespace: str) -> object | None:
        """The publishers of a stream's results besides the node's own (none here)."""
        return None

    def log_start(self, where: str) -> None:
        p = self.params
        self.get_logger().info(
            f"restoring {FRAMES_TOPIC} -> {where}; SR {'bypassed' if self.sr_bypass else 'on'}"
            f"; frames up to {p['max_width']}x{p['max_height']} at scales "
            f"{', '.join(map(str, self.limits.scales))}"
        )

    def add_stream(self, namespace: str, fixed: bool = False) -> StreamEndpoints:
        """Subscribe to a stream's frames and Knob and create its publishers."""
        ns = normalise_namespace(namespace)
        ep = self.endpoints.get(ns)
        if ep is not None:
            return ep
        ep = StreamEndpoints(ns, fixed, outputs=self.stream_outputs(ns))
        topic = functools.partial(stream_topic, ns)
        ep.keyframe_pub = self.create_publisher(
            KeyframeRequest, topic(KEYFRAME_REQUEST_TOPIC), qos_for(KEYFRAME_REQUEST_TOPIC)
        )
        ep.restored_pub = self.create_publisher(
            Image, topic(RESTORED_TOPIC), qos_for(RESTORED_TOPIC)
        )
        self.endpoints[ns] = ep  # before the subscriptions: a frame may come at once
        ep.subscriptions = [
            self.create_subscription(
                Knob, topic(KNOB_TOPIC), functools.partial(self.on_knob, ns), qos_for(KNOB_TOPIC)
            ),
            self.create_subscription(
                Frame,
                topic(FRAMES_TOPIC),
                functools.partial(self.on_frame, ns),
                qos_for(FRAMES_TOPIC),
            ),
        ]
        if ns != self.home or not fixed:
            self.get_logger().info(f"stream {ns}: serving {topic(FRAMES_TOPIC)}")
        return ep

    def on_parameters(self, changes: dict) -> None:
        """`ros2 param set`: `restore` switches SR on or off from the next frame (of every
        stream, overriding what their Knobs said)."""
        if "restore" in changes:
            self.sr_bypass = changes["restore"] == "bilinear"
            for ep in self.endpoints.values():
                ep.sr_bypass = None

    @boundary("knob")
    def on_knob(self, namespace: str, knob: Knob) -> None:
        k = check_knob(knob)  # refused as a whole: the previous settings stay
        ep = self.endpoints.get(namespace)
        if ep is None:
            return
        ep.knob_scale, ep.knob_crf = k.scale, k.h264_crf
        if k.sr_bypass != self.bypass(ep):
            self.get_logger().info(
                ep.label(f"knob {k.seq}: SR {'bypassed' if k.sr_bypass else 'on'}")
            )
        ep.sr_bypass = k.sr_bypass

    def bypass(self, ep: StreamEndpoints) -> bool:
        return self.sr_bypass if ep.sr_bypass is None else ep.sr_bypass

    @boundary("frame")
    def on_frame(self, namespace: str, frame: Frame, info: MessageInfo) -> None:
        t0 = time.perf_counter()
        ep = self.endpoints.get(namespace)
        if ep is None:
            return
        seq = int(frame.seq)
        try:
            check_stream_id(frame.stream_id, namespace)
        except BadInput as exc:
            drop_input(self, "frame", exc, what=ep.label(f"frame {seq}"))
            return
        check_stamp(frame.header.stamp, "header.stamp")
        sent_ns = check_stamp(frame.sent_stamp, "sent_stamp")
        # transport: compressor publish to DDS arrival here, not to when this callback ran
        arrival_ns = int(info["received_timestamp"])
        transport = (arrival_ns - sent_ns) / 1e6
        stream = self.streams.seen(namespace)
        try:
            decoded = stream.decode(
                frame.data, frame.codec, seq, int(frame.scale), int(frame.width), int(frame.height)
            )
        except BadInput as exc:  # CodecError included
            drop_input(self, "frame", exc, what=ep.label(f"frame {seq}"))
            self.ask_for_keyframe(ep, frame, stream.take_ask())
            return
        if decoded.log is not None and decoded.lr is None:  # (one severity per call site)
            self.get_logger().warning(ep.label(decoded.log))
        elif decoded.log is not None:
            self.get_logger().info(ep.label(decoded.log))
        self.ask_for_keyframe(ep, frame, decoded.ask)
        if decoded.lr is None:
            return
        self.take(
            namespace,
            StreamFrame(
                stream_id=namespace,
                header=frame.header,
                seq=seq,
                scale=int(frame.scale),
                codec=frame.codec,
                width=int(frame.width),
                height=int(frame.height),
                payload_bytes=len(frame.data),
                lr=decoded.lr,
                decode_ms=decoded.decode_ms,
                transport_ms=transport,
                t0=t0,
                sent_ns=sent_ns,
                arrival_ns=arrival_ns,
                frames_received=stream.frames_received,
                bytes_received=stream.bytes_received,
                sr_bypass=self.bypass(ep),
                stream_scale=ep.knob_scale,
                stream_crf=ep.knob_crf,
            ),
        )

    def ask_for_keyframe(self, ep: StreamEndpoints, frame: Frame, ask: Ask | None) -> None:
        if ask is None:  # not waiting, or asked less than 200 ms ago
            return
        request = KeyframeRequest(
            seq=ask.seq, last_decoded_seq=ask.last_decoded_seq, reason=ask.reason
        )
        request.header.stamp = self.get_clock().now().to_msg()
        request.header.frame_id = frame.header.frame_id
        ep.keyframe_pub.publish(request)
        stream = self.streams.get(ep.namespace)
        requests = stream.keyframes.requests if stream is not None else 0
        text = ep.label(f"frame {ask.seq}: asked the vehicle for an IDR ({ask.reason}; ")
        text += f"request {requests})"
        # asked again while waiting (the first request or its IDR was lost): debug; the first
        # of a wait: info, at most one line per 10 s per stream (a hostile or very lossy
        # stream asks up to 5 times a second)
        line = (
            None
            if ask.repeat or stream is None
            else stream.log_rate.line(("ask", ask.reason), text)
        )
        if line is None:
            self.get_logger().debug(text)
        else:
            self.get_logger().info(line)
