"""The fuzz run's result and its plain-text report."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cloudseg.bench.fuzz.catalogue import KINDS
from cloudseg.bench.fuzz.messages import KNOB_SEQ_BASE

if TYPE_CHECKING:
    from cloudseg.bench.fuzz.run import Fuzz


def result(
    fuzz: Fuzz, final: list[bool], seconds: float, codes: dict, vehicle_final: int
) -> dict[str, Any]:
    """The run's result dict: what was sent, crashes, what still serves, memory."""
    a = fuzz.answers
    crashed = {p.name: fuzz.dead[p.name] for p in fuzz.nodes if p.name in fuzz.dead}
    logs = {p.name: p.log_text() for p in fuzz.nodes}
    tracebacks = sum(text.count("Traceback") for text in logs.values())
    accepted = sorted(s for s in a.vehicle_knob_seqs if s >= KNOB_SEQ_BASE)
    for text in logs.values():
        for m in re.finditer(r"knob (\d+) applies", text):
            if int(m.group(1)) >= KNOB_SEQ_BASE:
                accepted.append(int(m.group(1)))
    growth = {}
    for name, r in fuzz.rss.items():
        if r.get("end") is not None and r.get("after_warmup") is not None:
            growth[name] = round(r["end"] - r["after_warmup"], 1)
    # the final batch: FrameStats for every burst of it, labels, the vehicle sending on
    still = all(final) and not crashed and vehicle_final >= 1 and bool(a.valid_labels)
    rss = dict(fuzz.rss)
    slopes: dict[str, float | None] = {}
    slopes_late: dict[str, float | None] = {}
    for i, p in enumerate(fuzz.nodes):
        samples = [row[1 + i] for row in fuzz.timeline if row[1 + i] is not None]
        rss.setdefault(p.name, {})["max"] = round(max(samples), 1) if samples else None
        after = [(row[0], row[1 + i]) for row in fuzz.timeline[fuzz.warm_index :]]
        after = [pt for pt in after if pt[1] is not None]
        slopes[p.name] = slope_per_min(after)
        if after:  # the second half: growth that goes on, not a first fill of caches
            mid = (after[0][0] + after[-1][0]) / 2
            slopes_late[p.name] = slope_per_min([pt for pt in after if pt[0] >= mid])
    return {
        "sent": fuzz.sent,
        "crashes": len(crashed),
        "still_serving": still,
        "valid_frames_answered": len(a.valid_stats),
        "rss_growth_mb": round(sum(growth.values()), 1) if growth else None,
        "per_kind": dict(sorted(fuzz.per_kind.items())),
        "valid_frames_sent": fuzz.valid_sent,
        "valid_frames_labelled": len(a.valid_labels),
        "valid_bursts": fuzz.bursts,
        "valid_bursts_answered": fuzz.bursts_answered,
        "final_bursts_answered": sum(final),
        "final_bursts": len(final),
        "hostile_frames_answered": a.hostile_stats,
        "cloud_frames_received": a.cloud_frames_received,
        "vehicle_images_valid": fuzz.vehicle_images,
        "vehicle_frames_for_valid_images": len(a.vehicle_valid),
        "vehicle_frames_for_final_images": vehicle_final,
        "vehicle_frames_total": a.vehicle_frames,
        "knobs_accepted": len(set(accepted)),
        "keyframe_requests": a.keyframe_requests,
        "keyframe_request_reasons": dict(a.keyframe_reasons),
        "publish_errors": dict(fuzz.publish_errors),
        "tracebacks_in_logs": tracebacks,
        "rss_growth_mb_per_process": growth,
        "rss_slope_mb_per_min": slopes,
        "rss_slope_mb_per_min_second_half": slopes_late,
        "rss_mb": rss,
        "rss_timeline": fuzz.timeline if fuzz.o.soak_minutes else None,
        "rss_timeline_columns": ["t_s", *(p.name for p in fuzz.nodes)],
        "dead": [
            {
                "process": name,
                "code": death.code,
                "at_s": round(death.at_s, 1),
                "after_message": death.after_message,
            }
            for name, death in crashed.items()
        ],
        "stop": codes,
        "seconds": round(seconds, 1),
        "rate_msgs_per_s": round(fuzz.sent / seconds, 1) if seconds > 0 else None,
        "soak_minutes": fuzz.o.soak_minutes or None,
        "drops_logged": {name: drop_kinds(text) for name, text in logs.items()},
        "log_lines": {name: text.count("\n") for name, text in logs.items()},
        "log_dir": str(fuzz.log_dir),
    }


def slope_per_min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points in MB per minute (None: under 3 points)."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return round(60 * sum((t - mt) * (v - mv) for t, v in points) / den, 2)


def drop_kinds(log: str) -> dict[str, int]:
    """The drop counts a node logged, per "callback/kind": the newest running count of each
    (a lower bound: the nodes log a kind at most every 10 s or 1000 drops)."""
    out: dict[str, int] = {}
    pattern = r"\]: ([^\[\]]+?) dropped \(([^)]+)\):.*?\[(\d+) so far"
    for m in re.finditer(pattern, log):
        words = m.group(1).split()
        while len(words) > 1 and re.fullmatch(r"[\d.]+", words[-1]):
            words.pop()  # "frame 12", "image 1795.0021": the callback, not the message
        key = f"{' '.join(words)}/{m.group(2)}"
        out[key] = max(out.get(key, 0), int(m.group(3)))
    return dict(sorted(out.items()))


def summary_table(r: dict[str, Any]) -> str:
    """The plain-text report of a run."""
    lines = []
    width = max(len(k) for k in KINDS)
    lines.append(f"{'kind':<{width}}  {'sent':>6}  what")
    for kind, (_, what) in KINDS.items():
        lines.append(f"{kind:<{width}}  {r['per_kind'].get(kind, 0):>6}  {what}")
    lines.append(f"{'total':<{width}}  {r['sent']:>6}  in {r['seconds']} s")
    lines.append("")
    rows = [
        ("node processes that exited (crashes)", r["crashes"]),
        ("still serving after the fuzzing", r["still_serving"]),
        (
            "valid frames answered (FrameStats) / sent",
            f"{r['valid_frames_answered']} / {r['valid_frames_sent']}",
        ),
        ("valid frames labelled", r["valid_frames_labelled"]),
        (
            "valid bursts answered / sent",
            f"{r['valid_bursts_answered']} / {r['valid_bursts']}",
        ),
        ("final bursts answered", f"{r['final_bursts_answered']} / {r['final_bursts']}"),
        ("hostile frames the cloud answered", r["hostile_frames_answered"]),
        ("frames the cloud received (its count)", r["cloud_frames_received"]),
        (
            "vehicle frames for valid camera images",
            f"{r['vehicle_frames_for_valid_images']} / {r['vehicle_images_valid']}",
        ),
        ("hostile Knobs applied", r["knobs_accepted"]),
        ("keyframe requests from the cloud", r["keyframe_requests"]),
        ("tracebacks in the node logs", r["tracebacks_in_logs"]),
        ("RSS growth after warm-up, MB (all nodes)", r["rss_growth_mb"]),
    ]
    for name, rr in r["rss_mb"].items():
        rows.append(
            (
                f"RSS {name} MB: start / after warm-up / end / max",
                f"{rr.get('start')} / {rr.get('after_warmup')} / {rr.get('end')} / {rr.get('max')}",
            )
        )
    for name, s in r["stop"].items():
        rows.append(
            (
                f"stop {name}: exit code, seconds, left behind",
                f"{s['code']}, {s['seconds']}, {s['left_behind'] or 'none'}",
            )
        )
    w = max(len(n) for n, _ in rows)
    lines.extend(f"{n:<{w}}  {v}" for n, v in rows)
    return "\n".join(lines)
