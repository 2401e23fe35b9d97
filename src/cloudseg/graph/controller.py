"""The adaptive controller node."""

from __future__ import annotations

from cloudseg.graph.schema import Endpoint, NodeSpec, Param
from cloudseg.graph.topics import STATS_TOPIC

CONTROLLER = NodeSpec(
    name="controller",
    executable="controller_node",
    side="vehicle",
    description="Adaptive controller: measures goodput, loss, latency trend, cloud time and an "
    f"online accuracy estimate from {STATS_TOPIC}; picks a profile entry and publishes Knob",
    params=(
        Param("profile", "", "profile file (cloudseg profile); empty = config/profile.json"),
        Param("window_s", 1.0, "measurement window: one decision per window", min=0.1, max=60.0),
        Param(
            "safety", 0.8, "use at most this fraction of the measured goodput", min=0.05, max=1.0
        ),
        Param(
            "latency_bound_ms",
            500.0,
            "predicted transport + cloud time per frame an entry must fit (0 = no bound)",
            min=0.0,
            max=60_000.0,
        ),
        Param(
            "start_kbps",
            500.0,
            "start at the most accurate entry under this rate (0 = the lowest entry); 500: "
            "about the compressor's default stream (x4, veryfast CRF 25)",
            min=0.0,
            max=1_000_000.0,
        ),
        Param("hold_s", 3.0, "no step up sooner than this after a change", min=0.0, max=600.0),
        Param("up_windows", 2, "good windows in a row before a probe up", min=1, max=100),
        Param(
            "bad_windows",
            2,
            "bad windows (loss, rising latency) in a row before a step down",
            min=1,
            max=100,
        ),
        Param("loss_bad", 0.05, "a window with more loss is bad", min=0.0, max=1.0),
        Param(
            "loss_severe", 0.3, "a window with this much loss steps down at once", min=0.0, max=1.0
        ),
        Param(
            "trend_bad_ms_per_s",
            50.0,
            "a window whose transport latency rises faster than this (ms per s) is bad",
            min=0.0,
            max=100_000.0,
        ),
        Param(
            "stall_s",
            1.0,
            "no stats for this long (after some arrived; at least 3x the cloud's time per "
            "frame): step to the lowest entry. Under 2 s: best-effort UDP collapses within "
            "about that when the sender outruns the link",
            min=0.1,
            max=600.0,
        ),
        Param(
            "probe_backoff_s",
            5.0,
            "a failed probe up is not retried for this long (doubling each time, up to 4x)",
            min=0.0,
            max=3600.0,
        ),
        Param(
            "accuracy_floor",
            0.6,
            "worst case below this accuracy estimate (confirmed twice): bypass SR, then raise "
            "the resolution (0 = off)",
            min=0.0,
            max=1.0,
        ),
        Param(
            "accuracy_hold_s", 30.0, "how long the worst-case setting is kept", min=0.0, max=3600.0
        ),
        Param(
            "full_frame_every_s",
            10.0,
            "online profiling: ask for one full-resolution frame this often (0 = never)",
            min=0.0,
            max=3600.0,
        ),
        Param(
            "full_frame_min_kbps",
            3000.0,
            "online profiling only while the goodput is at least this (a full-resolution IDR "
            "blocks a thin link for about a second)",
            min=0.0,
            max=1_000_000.0,
        ),
        Param(
            "climb_factor",
            2.0,
            "a step up goes to the most accurate entry at most this x the current rate (several "
            "entries at once; 1 = the next entry only)",
            min=1.0,
            max=100.0,
        ),
        Param(
            "ceiling_s",
            6.0,
            "after a step down, no step up above safety x the goodput the link carried when it "
            "was overrun, for this long (0 = off)",
            min=0.0,
            max=3600.0,
        ),
        Param(
            "queue_severe_ms",
            60.0,
            "delay over-use (the cloud's arrival times) with a queue estimate this long: step down "
            "at once, below the link until the queue drained",
            min=1.0,
            max=10000.0,
        ),
        Param(
            "probe_gain",
            1.5,
            "paced probes: a step up sends at most this x what arrives (a per-frame budget), "
            "raised by this factor per good window until the entry's own frames fit (0 = off)",
            min=0.0,
            max=10.0,
        ),
        Param(
            "frame_burst",
            3.0,
            "frames that fit: no frame larger than this x the entry's mean frame (its rate over "
            "the frame rate), IDRs included; the Knob's max_frame_bytes (0 = no cap)",
            min=0.0,
            max=100.0,
        ),
    ),
    live=frozenset(
        (
            "safety",
            "latency_bound_ms",
            "hold_s",
            "up_windows",
            "bad_windows",
            "loss_bad",
            "loss_severe",
            "trend_bad_ms_per_s",
            "stall_s",
            "probe_backoff_s",
            "accuracy_floor",
            "accuracy_hold_s",
            "full_frame_every_s",
            "full_frame_min_kbps",
            "climb_factor",
            "ceiling_s",
            "queue_severe_ms",
            "probe_gain",
            "frame_burst",
        )
    ),
    ready=(Endpoint("controller", "sub", STATS_TOPIC),),
)
