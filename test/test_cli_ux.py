"""The newcomer findings of issue 18 (section 5) that need no running graph: Ctrl-C as a flag,
the controller's changes with their reasons in the demo's summary, a reason next to every
missing score, the route said for the real camera size, and a Cityscapes root as an input.
The Ctrl-C runs of `cloudseg demo` and `cloudseg run`: test_faults.py; exit codes:
test_cli.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal

import pytest

from cloudseg.control.knob import describe_knob_changes, knob_changes_in, knob_line
from cloudseg.stop_signals import StopSignals
from cloudseg.stream_stats import StreamStats


def test_stop_signals_raise_once_or_only_record():
    """Raising: the first SIGINT raises, a second one during cleanup is only recorded; not
    raising (while rclpy spins): only recorded, `check()` raises at the caller's safe point;
    the previous handler comes back."""
    before = signal.getsignal(signal.SIGINT)
    with StopSignals(raising=True) as stop:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the second: recorded, nothing raised
        assert stop.requested == signal.SIGINT and not stop.raising
    assert signal.getsignal(signal.SIGINT) is before
    with StopSignals() as stop:
        stop.check()  # nothing asked yet
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            stop.check()


def test_a_stop_recorded_before_a_handler_took_over_moves_to_it():
    """A swallowed KeyboardInterrupt (a library catching everything around an import) still
    stops: the start-up guard recorded it, and the command's own StopSignals takes it over
    (raising mode: at once; flag mode: at its first check), once."""
    before = signal.getsignal(signal.SIGINT)
    guard = StopSignals(raising=True).install()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # swallowed, as a bare `except:` would
            os.kill(os.getpid(), signal.SIGINT)
        assert guard.requested == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            StopSignals(raising=True).install()
        assert guard.requested is None  # taken over: said once, by the command
        assert signal.getsignal(signal.SIGINT) == guard._handle  # the raising one put it back
        os.kill(os.getpid(), signal.SIGINT)  # the guard raises only once: now recorded
        with StopSignals() as stop:  # flag mode (the launcher): recorded, raised at check()
            assert stop.requested == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                stop.check()
    finally:
        guard.restore()
    assert signal.getsignal(signal.SIGINT) is before


CONTROLLER_LOG = "\n".join(
    [
        "[INFO] [1.0] [controller]: profile config/profile.json: 12 entries",
        "[INFO] [1.1] [controller]: "
        + knob_line(1, "x4 crf 25 (470 kbit/s, mIoU 0.388, 4372 ms)", "start"),
        "[INFO] [5.2] [controller]: knob 2: one full-resolution frame (online profiling)",
        "[INFO] [9.3] [controller]: "
        + knob_line(
            3,
            "x1 crf 20, bilinear (8888 kbit/s, mIoU 0.512, 900 ms)",
            "probe up: 3 good windows (loss 0%, goodput 9500 kbit/s)",
        ),
    ]
)


def test_the_summary_says_where_the_controller_took_the_stream_and_why():
    changes = knob_changes_in(CONTROLLER_LOG)
    assert [c.seq for c in changes] == [1, 3]  # the full-frame request is no settings change
    assert changes[1].short == "x1 crf 20, bilinear"
    assert describe_knob_changes(changes) == [
        "knob 1: x4 crf 25 (470 kbit/s, mIoU 0.388, 4372 ms): start",
        "knob 3: x4 crf 25 -> x1 crf 20, bilinear (8888 kbit/s, mIoU 0.512, 900 ms): probe up: "
        "3 good windows (loss 0%, goodput 9500 kbit/s)",
    ]
    stats = StreamStats()
    stats.add_knob_log(CONTROLLER_LOG)
    report = stats.report()
    assert "controller                  : 1 knob changes" in report
    assert "  knob 3: x4 crf 25 -> x1 crf 20, bilinear (8888 kbit/s" in report
    assert "probe up: 3 good windows" in report
    knobs = json.loads(stats.to_json())["knobs"]
    assert knobs[1] == {
        "seq": 3,
        "settings": "x1 crf 20, bilinear (8888 kbit/s, mIoU 0.512, 900 ms)",
        "reason": "probe up: 3 good windows (loss 0%, goodput 9500 kbit/s)",
    }


def test_every_missing_score_has_a_reason():
    """`--score`: a null mIoU comes with the reason (no labels back; no labels held while the
    camera ran; stills), and the score line says how many of the frames sent were scored."""
    stats = StreamStats(miou_reference="hr", frames_scored=0)
    summary = stats.summary()
    assert summary["miou"] is None and summary["miou_missing_reason"] == "no labels came back"
    assert summary["miou_held"] is None
    assert "held no labels for any camera frame" in summary["miou_held_missing_reason"]
    assert "n/a (no labels came back)" in stats.report()

    stats = StreamStats(miou_reference="gt", miou=0.41, miou_gt_classes=0.5, frames_scored=2)
    stats.max_seq, stats.cloud_received = 29, 30
    stats.segmented = {(0, 1), (0, 2)}
    stats.held_not_scored = "not scored on unrelated stills: ..."
    summary = stats.summary()
    assert summary["miou_missing_reason"] is None
    assert summary["miou_held_missing_reason"] == "not scored on unrelated stills: ..."
    line = stats.score_line()
    assert "0.410 over 2 of 30 frames sent" in line and "28 skipped by the busy cloud" in line
    assert "labels held per camera frame: n/a (not scored on unrelated stills" in line
    assert "miou_missing_reason" not in StreamStats().summary()  # without --score: nothing


def test_the_route_is_said_for_the_real_camera_size(weights_env):
    """A 1024x512 bag streamed x4: SR x4 (not "a 2048x1024 camera: SR x2"); said once per
    size, scale and mode, when its first frame comes."""
    from cloudseg.cloud.service import CloudService

    service = CloudService("carn_m", "espnetv2", device="cpu", restore_only=True)
    assert "2048x1024" not in service.describe()
    line = service.new_route((128, 256, 3), 4, sr_bypass=False)
    assert line == "a 1024x512 camera (x4 stream, 256x128): SR x4, segmented at 1024x512"
    assert service.new_route((128, 256, 3), 4, sr_bypass=False) is None  # said once
    assert service.new_route((256, 512, 3), 4, sr_bypass=True) == (
        "a 2048x1024 camera (x4 stream, 512x256): bilinear x2, segmented at 1024x512"
    )


def test_a_cityscapes_root_is_an_input_as_for_eval(shared_data):
    """`demo --input <root>` and `eval --data <root>` take the same folder: its val split."""
    from cloudseg.data.cityscapes import list_pairs
    from cloudseg.data.sources import check_input, open_source
    from cloudseg.scoring import LabelScorer

    root = shared_data / "cityscapes"
    check_input(root)
    source = open_source(root)
    pairs = list_pairs(root)
    assert len(source) == len(pairs)
    first = next(iter(source))
    assert first.rgb.shape == (1024, 2048, 3)
    scorer = LabelScorer(root)
    assert scorer.reference == "gt" and scorer.files == sorted(p.image_path for p in pairs)


def test_a_knob_line_with_the_rate_in_force_is_read_back_whole():
    """The controller appends the bitrate it runs an entry at (`... ms) at 640 kbit/s`)."""
    line = knob_line(4, "x4 750 kbit/s (750 kbit/s, mIoU 0.300, 0 ms) at 640 kbit/s", "over-use")
    (change,) = knob_changes_in(f"[INFO] [2.0] [controller]: {line}")
    assert change.settings.endswith("at 640 kbit/s") and change.reason == "over-use"
