"""Knob validation in one place, and one-shot requests that fire once (plain logic)."""

from __future__ import annotations

import math

import pytest

from cloudseg.control.knob import OneShot, check_knob, compressor_changes
from cloudseg.guard import BadInput
from cloudseg.media.stream import CompressorSettings
from cloudseg.msg import Knob
from cloudseg.nodes.controller_node import BUILTIN_PROFILE, knob_for


def _knob(**fields) -> Knob:
    k = Knob(seq=5, scale=4, codec="h264", crf=25)
    for name, value in fields.items():
        setattr(k, name, value)
    return k


def test_a_valid_knob_passes_with_its_values():
    k = check_knob(_knob(max_fps=10.0, key_threshold=0.2, useful_threshold=0.05))
    assert (k.seq, k.scale, k.crf, k.h264_crf) == (5, 4, 25, 25)
    assert k.key_threshold == pytest.approx(0.2) and k.max_fps == 10.0
    assert check_knob(_knob(codec="jpeg", quality=90, crf=0)).h264_crf is None
    assert check_knob(_knob(codec="png", quality=0)).quality == 0  # PNG level 0 is a level
    assert check_knob(_knob(codec="", crf=0, quality=0)).codec == ""  # keep everything


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"crf": 60}, "crf 60: must be <= 51"),
        ({"codec": "jpeg", "quality": 0}, "JPEG quality must be 1..100"),
        ({"codec": "png", "quality": 80}, "PNG compression level"),
        ({"quality": 101}, "quality 101"),
        ({"scale": 0}, "scale 0: must be one of 1, 2, 3, 4, 8"),
        ({"scale": 5}, "scale 5"),
        ({"scale": 255}, "scale 255"),
        ({"key_threshold": math.nan}, "key_threshold nan"),
        ({"useful_threshold": math.inf, "key_threshold": 0.5}, "useful_threshold inf"),
        ({"key_threshold": 0.1, "useful_threshold": 0.2}, "above key_threshold"),
        ({"key_threshold": 1.5}, "must be <= 1.0"),
        ({"max_fps": -1.0}, "max_fps -1.0"),
        ({"max_fps": math.nan}, "max_fps nan"),
        ({"selection_mode": "psychic"}, "selection_mode 'psychic'"),
        ({"codec": "vp9"}, "codec 'vp9'"),
        ({"bitrate_kbps": 200_000}, "bitrate_kbps 200000"),
    ],
)
def test_an_invalid_knob_is_refused_as_a_whole_with_its_reasons(fields, reason):
    with pytest.raises(BadInput) as info:
        check_knob(_knob(**fields))
    assert info.value.kind == "knob"
    assert str(info.value).startswith("knob 5 refused: ") and reason in str(info.value)


def test_every_problem_is_named():
    with pytest.raises(BadInput) as info:
        check_knob(_knob(crf=60, scale=0, max_fps=math.nan))
    text = str(info.value)
    assert "crf 60" in text and "scale 0" in text and "max_fps nan" in text


def test_a_negative_stamp_is_refused():
    k = _knob()
    k.header.stamp.sec = -5
    with pytest.raises(BadInput, match=r"header\.stamp"):
        check_knob(k)


def test_the_controllers_knobs_pass():
    from cloudseg.control.controller import Decision

    for i, entry in enumerate(BUILTIN_PROFILE):
        check_knob(knob_for(Decision(entry, "test", changed=True), i + 1))


def test_compressor_changes_keep_what_the_knob_keeps():
    s = CompressorSettings(scale=4, codec="jpeg", quality=70, crf=20)
    keep = s.with_changes(**compressor_changes(check_knob(_knob(codec="", crf=0, scale=2))))
    assert (keep.scale, keep.codec, keep.quality, keep.crf) == (2, "jpeg", 70, 20)
    h264 = s.with_changes(**compressor_changes(check_knob(_knob(crf=30, bitrate_kbps=0))))
    assert (h264.codec, h264.crf, h264.quality) == ("h264", 30, 70)
    with pytest.raises(ValueError, match="JPEG quality"):
        CompressorSettings(codec="jpeg", quality=0)  # what a bad start-up value would make


def test_one_shot_fires_once_and_never_for_a_request_older_than_the_node():
    def request(seq: int, stamp_ns: int):
        k = _knob(seq=seq, request_full_frame=True)
        k.header.stamp.sec, k.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        return check_knob(k)

    shot = OneShot(start_ns=100 * 10**9)
    assert not shot.fire(request(1, 99 * 10**9))  # made for the node before this one
    assert shot.fire(request(2, 101 * 10**9))
    assert not shot.fire(request(2, 101 * 10**9))  # the same Knob again
    assert shot.fire(request(3, 102 * 10**9))
    assert not shot.fire(check_knob(_knob(seq=4)))  # no request
    assert not OneShot(start_ns=1).fire(check_knob(_knob(seq=5, request_full_frame=True)))
