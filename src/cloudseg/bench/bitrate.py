"""``cloudseg bench bitrate``: bitrate, bilinear-restore PSNR and codec speed per scale and codec.

For each input (a folder of Cityscapes sequence frames or a video file), each downsampling
scale (1, 2, 4) and each codec configuration, every frame is downsampled (area), encoded,
decoded, restored to full size with bilinear upsampling and compared with the original.
Reported: kbit/s at 17 fps, mean PSNR of the restored frames (dB), and median encode / decode
milliseconds per frame (colour conversion included).

Codec configurations: H.264 CRF 23; H.264 at a fixed bitrate anchored on the paper's operating
points (10 Mbit/s at full resolution, 750 kbit/s at 4x, and 2700 kbit/s at 2x, about their
geometric mean); JPEG quality 80.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cloudseg.data.frames import DataError
from cloudseg.data.sources import open_source
from cloudseg.media.codecs import CodecError
from cloudseg.media.quality import psnr
from cloudseg.media.resize import downsample, upsample_bilinear
from cloudseg.media.stream import make_decoder, make_encoder

FPS = 17.0
SCALES = (1, 2, 4)
FIXED_KBPS = {1: 10000, 2: 2700, 4: 750}
"""H.264 fixed bitrate per scale: the paper's 10 Mbit/s (full) and 750 kbit/s (4x) points."""


@dataclass(frozen=True)
class CodecConfig:
    """One codec configuration of the benchmark."""

    name: str
    codec: str
    params: dict

    @staticmethod
    def all_for(scale: int) -> list[CodecConfig]:
        kbps = FIXED_KBPS[scale]
        return [
            CodecConfig("h264 crf23", "h264", {"crf": 23}),
            CodecConfig(f"h264 {kbps}k", "h264", {"bitrate_kbps": kbps}),
            CodecConfig("jpeg q80", "jpeg", {"quality": 80}),
        ]


@dataclass
class Row:
    """One line of the result table."""

    input: str
    scale: int
    size: str
    codec: str
    frames: int
    kbps: float
    psnr_db: float
    encode_ms: float
    decode_ms: float


def read_frames(path: Path, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` RGB uint8 frames from anything the source node reads (frame folder,
    video, rosbag2)."""
    try:
        return [frame.rgb for frame in open_source(path, limit=limit)]
    except DataError as exc:
        raise ValueError(str(exc)) from exc


def _even(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return rgb[: h - h % 2, : w - w % 2]


def run_config(
    frames: list[np.ndarray], scale: int, config: CodecConfig, progress: tqdm | None = None
) -> dict:
    """Encode, decode and restore ``frames``; totals and per-frame timings of one configuration."""
    encoder = make_encoder(config.codec, **config.params)
    decoder = make_decoder(config.codec)
    total_bytes, enc_ms, dec_ms, scores = 0, [], [], []
    lr_size = ""
    for seq, frame in enumerate(frames):
        lr = downsample(frame, scale, "area")
        if config.codec == "h264":
            lr = _even(lr)
        lr_size = f"{lr.shape[1]}x{lr.shape[0]}"
        t0 = time.perf_counter()
        encoded = encoder.encode(lr)
        t1 = time.perf_counter()
        decoded = decoder.decode(encoded.payload, seq)
        t2 = time.perf_counter()
        if decoded is None:
            raise CodecError(f"decoder dropped frame {seq} of a loss-free stream")
        restored = upsample_bilinear(decoded, (frame.shape[1], frame.shape[0]))
        total_bytes += len(encoded.payload)
        enc_ms.append((t1 - t0) * 1000)
        dec_ms.append((t2 - t1) * 1000)
        scores.append(psnr(restored, frame))
        if progress is not None:
            progress.update(1)
    seconds = len(frames) / FPS
    return {
        "size": lr_size,
        "frames": len(frames),
        "kbps": total_bytes * 8 / seconds / 1000,
        "psnr_db": statistics.fmean(scores),
        "encode_ms": statistics.median(enc_ms),
        "decode_ms": statistics.median(dec_ms),
    }


def _input_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def bench(paths: list[Path], frames: int, scales: tuple[int, ...] = SCALES) -> Iterator[Row]:
    """Yield one :class:`Row` per input, scale and codec configuration."""
    loaded = [(p, read_frames(p, frames)) for p in paths]
    total = sum(len(f) * len(CodecConfig.all_for(s)) for _, f in loaded for s in scales)
    with tqdm(total=total, desc="bench bitrate", unit="frame", file=sys.stderr) as progress:
        for path, clip in loaded:
            for scale in scales:
                for config in CodecConfig.all_for(scale):
                    progress.set_postfix_str(f"{_input_name(path)} x{scale} {config.name}")
                    result = run_config(clip, scale, config, progress)
                    yield Row(input=_input_name(path), scale=scale, codec=config.name, **result)


_COLUMNS = (
    ("input", "input", "{}"),
    ("scale", "scale", "{}"),
    ("size", "coded size", "{}"),
    ("codec", "codec", "{}"),
    ("kbps", "kbit/s", "{:.0f}"),
    ("psnr_db", "PSNR dB", "{:.2f}"),
    ("encode_ms", "enc ms", "{:.2f}"),
    ("decode_ms", "dec ms", "{:.2f}"),
)


def _cells(rows: list[Row]) -> list[list[str]]:
    return [[fmt.format(getattr(r, key)) for key, _, fmt in _COLUMNS] for r in rows]


def format_table(rows: list[Row]) -> str:
    """An aligned plain-text table (numbers right-aligned)."""
    header = [title for _, title, _ in _COLUMNS]
    cells = _cells(rows)
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=True)]
    numeric = [fmt != "{}" or key == "scale" for key, _, fmt in _COLUMNS]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(c) for c in cells])


def format_markdown(rows: list[Row]) -> str:
    """A markdown table for docs/benchmarks/bitrate.md."""
    header = [title for _, title, _ in _COLUMNS]
    align = ["---" if fmt == "{}" and key != "scale" else "---:" for key, _, fmt in _COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in _cells(rows)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudseg bench bitrate",
        description=(
            "Bitrate (kbit/s at 17 fps), PSNR of the bilinear restoration to full size and "
            "median encode/decode time per frame, for downsampling scales 1, 2, 4 and the "
            "codecs H.264 CRF 23, H.264 fixed bitrate (10000/2700/750 kbit/s at scale 1/2/4) "
            "and JPEG q80."
        ),
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        type=Path,
        metavar="PATH",
        help="a Cityscapes sequence folder, a video file or a rosbag2",
    )
    parser.add_argument(
        "--frames", type=int, default=30, metavar="N", help="frames per input (default 30)"
    )
    parser.add_argument(
        "--json", action="store_true", help='also print {"rows": [...]} as the last stdout line'
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print a markdown table instead of plain text"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 on bad arguments or unreadable input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f"--frames must be >= 1, got {args.frames}")
    for path in args.input:
        if not path.exists():
            parser.error(f"input {path} does not exist")
    try:
        rows = list(bench(args.input, args.frames))
    except (ValueError, CodecError) as exc:
        print(f"cloudseg bench bitrate: error: {exc}", file=sys.stderr)
        return 2
    print(format_markdown(rows) if args.markdown else format_table(rows))
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
