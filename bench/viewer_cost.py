"""What the viewer topics cost per frame, against what the node does anyway (issue 18).

Usage: .venv/bin/python bench/viewer_cost.py [--input DIR] [--frames N] [--repeat R]

Per frame of a real sequence (default ../shared/data/sequences/aachen_seq0000, x4 H.264 as
the compressor sends it), on one core:
- the compressor: encoding the frame (done anyway) vs the viewer extras when both viewer
  topics have subscribers: checking the access unit, building and serialising the
  CompressedVideo and the FFMPEGPacket;
- the segmenter: the mono8 labels Image (done anyway) vs the coloured rgb8 Image
  (`colorize` + message + serialisation), at 1024x512 and 2048x1024.
Prints one table; the ratios are what holds on a noisy shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

from cloudseg.data.cityscapes import colorize
from cloudseg.data.folder import list_frame_files, read_rgb
from cloudseg.media.stream import CompressorSettings, FrameCompressor
from cloudseg.media.viewer_formats import check_access_unit
from cloudseg.nodes.convert import compressed_video, ffmpeg_packet, numpy_to_image

DEFAULT_INPUT = Path(__file__).resolve().parents[1] / "../shared/data/sequences/aachen_seq0000"


def _ms(fn, repeat: int) -> float:
    """Median ms of `repeat` calls of fn()."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def stream_costs(frames: list[np.ndarray], repeat: int) -> tuple[float, float]:
    """(encode ms, viewer extras ms) per frame, medians over the frames."""
    compressor = FrameCompressor(CompressorSettings(scale=4))
    header = Header(frame_id="camera")
    encode, extras = [], []
    for i, rgb in enumerate(frames):
        t0 = time.perf_counter()
        out = compressor.compress(rgb)
        encode.append((time.perf_counter() - t0) * 1e3)

        def viewers(payload: bytes = out.payload, size=(out.width, out.height), pts=i) -> None:
            key = check_access_unit(payload)
            serialize_message(compressed_video(payload, header))
            serialize_message(ffmpeg_packet(payload, header, size, pts, key))

        extras.append(_ms(viewers, repeat))
    return statistics.median(encode), statistics.median(extras)


def label_costs(size: tuple[int, int], repeat: int) -> tuple[float, float]:
    """(mono8 Image ms, coloured rgb8 Image ms) for a random label map of `size` (w, h)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 19, (size[1], size[0]), dtype=np.uint8)
    header = Header(frame_id="camera")
    mono = _ms(lambda: serialize_message(numpy_to_image(labels, "mono8", header)), repeat)
    color = _ms(lambda: serialize_message(numpy_to_image(colorize(labels), "rgb8", header)), repeat)
    return mono, color


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="a folder of frames")
    parser.add_argument("--frames", type=int, default=30, help="frames of the input (30)")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per item (20)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = list_frame_files(args.input)[: args.frames]
    if not files:
        parser.error(f"--input {args.input}: no frames")
    frames = [read_rgb(f) for f in files]
    encode, extras = stream_costs(frames, args.repeat)
    print(f"{'per frame, one core':44} {'done anyway':>12} {'viewer cost':>12} {'ratio':>7}")
    print(
        f"{'x4 H.264 (encode vs both viewer messages)':44} {encode:10.2f}ms {extras:10.3f}ms "
        f"{extras / encode:7.3f}"
    )
    for size in ((1024, 512), (2048, 1024)):
        mono, color = label_costs(size, args.repeat)
        label = f"labels {size[0]}x{size[1]} (mono8 vs coloured rgb8)"
        print(f"{label:44} {mono:10.2f}ms {color:10.2f}ms {color / mono:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
