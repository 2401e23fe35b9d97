"""``cloudseg bench recover``: time to recover after a lost frame, with and without the
cloud's keyframe request (issue 9, "recovery in one round trip").

One H.264 stream goes from the real vehicle side (:class:`~cloudseg.media.stream.
FrameCompressor` with the compressor node's default settings: x4, libx264 veryfast CRF 25,
GOP 17) to the real cloud decoder (:class:`~cloudseg.media.stream.StreamDecoder`). Every
``--spacing`` frames one frame is dropped on the link, cycling through the positions in the
GOP (the IDR itself included). Policies:

* ``periodic``: the cloud waits for the encoder's next periodic IDR (up to ``gop`` frames; two
  GOPs when the IDR itself was lost);
* ``request``: the cloud asks for an IDR when its decoder waits for one
  (:class:`~cloudseg.recovery.KeyframeRequester`, at most one request per 200 ms while it
  waits), the request reaches the vehicle half a round trip later, and the compressor makes its
  next frame an IDR (:class:`~cloudseg.recovery.KeyframeOnRequest`), for a round trip of R ms.

Time is simulated (frame i is captured at i / fps and arrives one-way, R/2, later; encoding,
transmission and decoding take no time), the bits and the decoder's behaviour are real.
Reported per policy: frames without a picture per loss (the lost one included) and the time
from the lost frame's due arrival to the first picture decoded again, mean / p50 / max;
requests sent, IDRs sent, and the stream's kbit/s (what the extra IDRs cost).
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cloudseg.media.codecs import CodecError
from cloudseg.media.stream import FrameCompressor, StreamDecoder, default_compressor_settings
from cloudseg.recovery import KeyframeOnRequest, KeyframeRequester

FPS = 17.0


@dataclass
class Row:
    policy: str
    rtt_ms: float | None
    losses: int
    frames_lost_mean: float  # frames without a picture per loss (the lost frame included)
    frames_lost_max: int
    recover_ms_mean: float
    recover_ms_p50: float
    recover_ms_max: float
    requests: int
    idrs: int
    kbps: float


def read_frames(path: Path | None, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` RGB frames (a sequence folder, a video or a bag; None: generated clip)."""
    from cloudseg.data.frames import DataError
    from cloudseg.data.sources import open_source

    try:
        return [f.rgb for f in open_source(None if path is None else str(path), limit=limit)]
    except DataError as exc:
        raise ValueError(str(exc)) from exc


def ping_pong(n: int, i: int) -> int:
    """Index of frame ``i`` of a clip of ``n`` played forth and back (no cut at the loop)."""
    if n == 1:
        return 0
    period = 2 * n - 2
    k = i % period
    return k if k < n else period - k


def run_policy(
    frames: list[np.ndarray],
    losses: int,
    spacing: int,
    gop: int,
    rtt_ms: float | None,
    fps: float = FPS,
) -> Row:
    """One stream of ``losses * spacing`` frames with one frame lost every ``spacing`` frames;
    ``rtt_ms`` None: no keyframe requests (periodic IDRs only)."""
    settings = default_compressor_settings(gop=gop)
    compressor, decoder = FrameCompressor(settings), StreamDecoder()
    one_way = 0.0 if rtt_ms is None else rtt_ms / 2000.0
    requester = KeyframeRequester(clock=lambda: 0.0)  # told the simulated time explicitly
    honour = KeyframeOnRequest()
    in_flight: list[tuple[float, int]] = []  # (arrival at the vehicle, seq named)
    # loss k hits the frame at position k % gop of the GOP the encoder is in (0: its IDR)
    bases = [k * spacing + spacing // 2 for k in range(losses)]
    next_loss: int | None = None
    last_idr = 0
    outage: int | None = None  # seq of the lost frame while no picture has come back
    unshown: list[int] = []
    total_bytes = idrs = 0
    n = losses * spacing
    for seq in range(n):
        t = seq / fps
        while in_flight and in_flight[0][0] <= t:  # requests that reached the vehicle
            honour.request(heapq.heappop(in_flight)[1])
        if bases and seq == bases[0]:  # periodic IDRs from last_idr on until the next loss
            k = losses - len(bases)
            bases.pop(0)
            next_loss = seq + (k % gop - (seq - last_idr)) % gop
        forced = honour.take(now=t)
        c = compressor.compress(frames[ping_pong(len(frames), seq)], keyframe=forced)
        honour.sent(seq, c.keyframe)
        total_bytes += len(c.payload)
        idrs += c.keyframe
        last_idr = seq if c.keyframe else last_idr
        if seq == next_loss:
            if outage is None:
                outage = seq
            continue
        arrival = t + one_way
        try:
            lr, _ = decoder.decode(c.payload, c.codec, seq, c.scale, c.width, c.height)
        except CodecError:
            lr = None
        if lr is None:
            if rtt_ms is not None:
                ask = requester.failed(seq, now=arrival)
                if ask is not None:
                    heapq.heappush(in_flight, (arrival + one_way, ask.seq))
            continue
        requester.decoded(seq)
        if outage is not None:
            unshown.append(seq - outage)
            outage = None
    if outage is not None:
        raise ValueError(f"the stream ended before it recovered from the loss at {outage}")
    ms = [u * 1000.0 / fps for u in unshown]
    return Row(
        policy="periodic IDR only" if rtt_ms is None else "IDR on request",
        rtt_ms=None if rtt_ms is None else float(rtt_ms),
        losses=len(unshown),
        frames_lost_mean=statistics.fmean(unshown),
        frames_lost_max=max(unshown),
        recover_ms_mean=statistics.fmean(ms),
        recover_ms_p50=statistics.median(ms),
        recover_ms_max=max(ms),
        requests=requester.requests,
        idrs=idrs,
        kbps=total_bytes * 8 * fps / n / 1000.0,
    )


def bench(
    frames: list[np.ndarray],
    rtts_ms: list[float],
    losses: int,
    spacing: int,
    gop: int,
    fps: float = FPS,
) -> list[Row]:
    rows = [run_policy(frames, losses, spacing, gop, None, fps)]
    rows += [run_policy(frames, losses, spacing, gop, r, fps) for r in rtts_ms]
    return rows


_COLUMNS = (
    ("policy", "policy", "{}"),
    ("rtt_ms", "RTT ms", "{:.0f}"),
    ("losses", "losses", "{}"),
    ("frames_lost_mean", "frames w/o picture mean", "{:.1f}"),
    ("frames_lost_max", "max", "{}"),
    ("recover_ms_mean", "recover ms mean", "{:.0f}"),
    ("recover_ms_p50", "p50", "{:.0f}"),
    ("recover_ms_max", "max", "{:.0f}"),
    ("requests", "requests", "{}"),
    ("idrs", "IDRs", "{}"),
    ("kbps", "kbit/s", "{:.0f}"),
)


def _cells(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        cells = []
        for key, _, fmt in _COLUMNS:
            value = getattr(r, key)
            cells.append("-" if value is None else fmt.format(value))
        out.append(cells)
    return out


def format_markdown(rows: list[Row]) -> str:
    header = [title for _, title, _ in _COLUMNS]
    align = ["---" if key == "policy" else "---:" for key, _, _ in _COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in _cells(rows)])


def format_table(rows: list[Row]) -> str:
    header = [title for _, title, _ in _COLUMNS]
    cells = _cells(rows)
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=True)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(c) for c in cells])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudseg bench recover",
        description=(
            "Time to recover after a lost frame: the real compressor (x4 H.264, the compressor "
            "node's defaults) and the real cloud decoder, one frame dropped every --spacing "
            "frames; waiting for the periodic IDR vs asking for one (round trip --rtt-ms)."
        ),
    )
    parser.add_argument(
        "--input",
        type=Path,
        metavar="PATH",
        help="a Cityscapes sequence folder, a video or a rosbag2 (default: a generated clip); "
        "played forth and back",
    )
    parser.add_argument("--frames", type=int, default=30, help="frames read (default 30)")
    parser.add_argument(
        "--losses", type=int, default=34, help="losses per policy (default 34: each GOP "
        "position twice)",
    )  # fmt: skip
    parser.add_argument(
        "--spacing", type=int, default=60, help="frames between losses (default 60)"
    )
    parser.add_argument("--gop", type=int, default=17, help="H.264 GOP (default 17)")
    parser.add_argument("--fps", type=float, default=FPS, help="frame rate (default 17)")
    parser.add_argument(
        "--rtt-ms",
        type=float,
        nargs="+",
        default=[20.0, 50.0, 100.0, 200.0, 400.0],
        help="round trips for the request policy (default 20 50 100 200 400)",
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.add_argument("--markdown", action="store_true", help="a markdown table")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames < 1 or args.losses < 1 or args.gop < 2 or args.fps <= 0:
        parser.error("--frames and --losses must be >= 1, --gop >= 2, --fps > 0")
    if args.spacing < 2 * args.gop + 2:
        parser.error(f"--spacing must be >= 2 GOPs + 2 ({2 * args.gop + 2}) to see recoveries")
    if any(r < 0 for r in args.rtt_ms):
        parser.error("--rtt-ms must be >= 0")
    logging.getLogger("cloudseg.media.h264").setLevel(logging.ERROR)  # one line per loss
    t0 = time.perf_counter()
    try:
        frames = read_frames(args.input, args.frames)
        rows = bench(frames, args.rtt_ms, args.losses, args.spacing, args.gop, args.fps)
    except (ValueError, CodecError) as exc:
        print(f"cloudseg bench recover: error: {exc}", file=sys.stderr)
        return 2
    h, w = frames[0].shape[:2]
    print(
        f"{len(frames)} frames {w}x{h} ({args.input or 'generated clip'}), x4 H.264 veryfast "
        f"CRF 25 GOP {args.gop}, {args.fps:g} fps; one loss every {args.spacing} frames; "
        f"{time.perf_counter() - t0:.0f} s on {platform.node()}",
        file=sys.stderr,
    )
    print(format_markdown(rows) if args.markdown else format_table(rows))
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
