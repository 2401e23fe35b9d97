"""cloudseg bench recover: the real encoder and decoder, a lost frame, with and without the
cloud's keyframe request (small run on a generated clip)."""

from __future__ import annotations

import json

import pytest

from cloudseg.bench import recover


def test_a_request_recovers_within_one_round_trip_and_periodic_idrs_within_a_gop(capsys):
    code = recover.main(["--frames", "8", "--losses", "9", "--spacing", "36", "--gop", "9",
                         "--rtt-ms", "20", "100", "--json"])  # fmt: skip
    assert code == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    periodic, fast, slow = rows
    assert periodic["policy"] == "periodic IDR only" and periodic["requests"] == 0
    assert periodic["losses"] == 9 and periodic["frames_lost_max"] == 9  # the IDR itself lost
    assert periodic["frames_lost_mean"] == 5.0  # (1 + 2 + ... + 9) / 9
    # 20 ms: the IDR comes with the frame after the one that showed the gap
    assert fast["rtt_ms"] == 20 and fast["frames_lost_max"] == 2
    assert slow["frames_lost_max"] == 3  # 100 ms at 17 fps: one more frame
    assert fast["requests"] == 8  # the loss just before a periodic IDR needs none
    assert fast["idrs"] > periodic["idrs"] and fast["kbps"] > periodic["kbps"]


def test_bad_arguments_are_refused():
    for args in (["--rtt-ms", "-1"], ["--gop", "17", "--spacing", "20"]):
        with pytest.raises(SystemExit) as info:
            recover.main(args)
        assert info.value.code == 2
