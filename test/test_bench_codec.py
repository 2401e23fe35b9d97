"""H.264 rate-control modes and intra refresh, and `cloudseg bench codec` on a few frames."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cloudseg.bench import codec as bench_codec
from cloudseg.cli import main as cli_main
from cloudseg.media.codecs import CodecError
from cloudseg.media.h264 import H264Decoder, H264Encoder, is_h264_keyframe
from cloudseg.media.stream import CompressorSettings, FrameCompressor, StreamDecoder


def _clip(n: int = 12, w: int = 128, h: int = 64, seed: int = 0) -> list[np.ndarray]:
    """A textured scene panning one pixel per frame, with a little noise."""
    rng = np.random.default_rng(seed)
    scene = cv2.GaussianBlur(rng.integers(0, 256, (h, w + n, 3), np.uint8), (5, 5), 0)
    noise = [rng.integers(-6, 7, (h, w, 3)) for _ in range(n)]
    return [np.clip(scene[:, i : i + w].astype(int) + noise[i], 0, 255).astype(np.uint8)
            for i in range(n)]  # fmt: skip


def _stream(encoder: H264Encoder, frames: list[np.ndarray]) -> tuple[list, list]:
    decoder = H264Decoder()
    sent, decoded = [], []
    for seq, rgb in enumerate(frames):
        e = encoder.encode(rgb)
        sent.append(e)
        decoded.append(decoder.decode(e.payload, seq))
    return sent, decoded


def test_intra_refresh_has_one_idr_and_decodes_from_the_start():
    frames = _clip()
    enc = H264Encoder(crf=23, gop=4, intra_refresh=True)
    sent, decoded = _stream(enc, frames)
    assert all(d is not None and d.shape == frames[0].shape for d in decoded)
    assert [e.keyframe for e in sent] == [True] + [False] * (len(frames) - 1)
    assert [is_h264_keyframe(e.payload) for e in sent] == [e.keyframe for e in sent]
    periodic, _ = _stream(H264Encoder(crf=23, gop=4), frames)
    assert sum(e.keyframe for e in periodic) == 3  # frames 0, 4, 8: IDRs without refresh


def test_forced_keyframe_with_intra_refresh_is_a_decodable_idr():
    frames = _clip()
    settings = CompressorSettings(scale=2, intra_refresh=True, gop=4)
    compressor = FrameCompressor(settings)
    for rgb in frames[:5]:
        compressor.compress(rgb)
    forced = compressor.compress(frames[5], keyframe=True)
    assert forced.keyframe and is_h264_keyframe(forced.payload)
    joined = StreamDecoder()  # a receiver that joins at the forced keyframe
    r = joined.restore(forced.payload, "h264", 100, 2, forced.width, forced.height)
    assert r is not None and r.rgb.shape == frames[5].shape
    nxt = compressor.compress(frames[6])
    assert not nxt.keyframe
    assert joined.restore(nxt.payload, "h264", 101, 2, nxt.width, nxt.height) is not None


@pytest.mark.parametrize(
    ("params", "mode"),
    [
        ({"crf": 18}, "crf"),
        ({"crf": 18, "maxrate_kbps": 40}, "capped-crf"),
        ({"bitrate_kbps": 40}, "cbr"),
    ],
)
def test_rate_control_modes_encode_and_decode(params, mode):
    enc = H264Encoder(preset="veryfast", **params)
    assert enc.rate_control == mode
    sent, decoded = _stream(enc, _clip(seed=1))
    assert all(d is not None for d in decoded)
    assert sent[0].keyframe


def test_capped_crf_spends_fewer_bits_than_plain_crf():
    frames = _clip(seed=2)
    plain, _ = _stream(H264Encoder(crf=18), frames)
    capped, _ = _stream(H264Encoder(crf=18, maxrate_kbps=40), frames)
    assert sum(len(e.payload) for e in capped) < sum(len(e.payload) for e in plain)


def test_bad_maxrate_is_refused_and_cbr_ignores_it():
    with pytest.raises(CodecError, match="maxrate_kbps"):
        H264Encoder(crf=23, maxrate_kbps=-1)
    assert H264Encoder(bitrate_kbps=300).rate_control == "cbr"


def test_compressor_settings_pass_the_new_knobs():
    s = CompressorSettings(crf=25, maxrate_kbps=450, intra_refresh=True, preset="veryfast")
    assert s.encoder_params() == {
        "gop": 17,
        "preset": "veryfast",
        "crf": 25,
        "maxrate_kbps": 450,
        "intra_refresh": True,
    }
    assert (
        "maxrate_kbps"
        not in CompressorSettings(bitrate_kbps=300, maxrate_kbps=450).encoder_params()
    )
    assert "intra_refresh" not in CompressorSettings().encoder_params()


def test_bench_runs_on_four_frames_with_a_fake_segmenter():
    frames = _clip(n=4, w=256, h=128)
    labels = [np.zeros((64, 128), np.uint8) for _ in frames]

    def segment(lrs: list[np.ndarray], mode: str) -> list[np.ndarray]:
        return [(lr[::1, ::1, 0][:64, :128] > 128).astype(np.uint8) for lr in lrs]

    configs = bench_codec.all_configs(["ultrafast"], bench_codec.RATE_CONTROLS[:2])
    rows = bench_codec.run_bench(
        [(frames, labels)], configs, scale=2, score_every=2, segment=segment,
        sr_for=[configs[0].name],
    )  # fmt: skip
    assert [r.config for r in rows] == [c.name for c in configs]
    assert all(r.frames == 4 and r.kbps > 0 and r.psnr_db > 20 for r in rows)
    assert all(0 <= r.miou <= 1 and r.scored == 2 for r in rows)
    assert 0 <= rows[0].miou_sr <= 1 and np.isnan(rows[1].miou_sr)
    assert [r.idr_frames for r in rows] == [1, 1, 1, 1]
    assert "| ultrafast crf23 |" in bench_codec.format_markdown(rows)


def test_bench_cli_without_miou(tmp_path, capsys):
    for i, rgb in enumerate(_clip(n=4, w=256, h=128)):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    rc = cli_main(
        ["bench", "codec", "--input", str(tmp_path), "--no-miou", "--presets", "ultrafast",
         "--scale", "2", "--json"]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "ultrafast cbr450k ir" in out and out.strip().splitlines()[-1].startswith('{"rows"')


def test_bench_codec_help_exits_0():
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", "codec", "--help"])
    assert exc.value.code == 0


def test_bench_cli_frame_budget(tmp_path, capsys):
    """--frame-budget: uncapped, each budget, and the budgets in turn; no frame over."""
    for i, rgb in enumerate(_clip(n=4, w=256, h=128)):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    rc = cli_main(
        ["bench", "codec", "--input", str(tmp_path), "--no-miou", "--scale", "2",
         "--frame-budget", "3000", "2000", "--json"]
    )  # fmt: skip
    assert rc == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert [r["config"] for r in rows] == [
        "veryfast crf25", "veryfast crf25 <=3000B", "veryfast crf25 <=2000B",
        "veryfast crf25 <=3000/2000B",
    ]  # fmt: skip
    for row, budget in zip(rows[1:3], (3000, 2000), strict=True):
        assert row["extra"]["max_bytes"] <= budget and row["extra"]["over_budget"].startswith("0")
