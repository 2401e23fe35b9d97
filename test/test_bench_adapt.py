"""`cloudseg bench adapt`: the pure parts (trace, windows, collapse, policy) and one run over
two network namespaces joined by a tc-shaped veth (root only)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cloudseg.bench import adapt, netem
from cloudseg.bench.adapt_analysis import (
    AdaptError,
    ResolutionPolicy,
    Step,
    WindowStats,
    analyse,
    collapsed,
    compare_to_fixed,
    offered_over_link_max,
    parse_trace,
)
from cloudseg.bench.adapt_gcc import GccPolicy

# --- pure parts ------------------------------------------------------------------------------


def test_default_trace() -> None:
    steps = parse_trace(None, step_seconds=5)
    assert [s.kbps for s in steps] == [8000, 2000, 1000, 4000]
    assert [s.start for s in steps] == [0, 5, 10, 15]
    assert steps[-1].end == 20


def test_trace_csv_with_header_and_json(tmp_path: Path) -> None:
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("seconds,kbps\n# a comment\n10,8000\n5,1000\n")
    assert parse_trace(csv_file) == [Step(0, 10, 8000), Step(10, 5, 1000)]
    js = tmp_path / "t.json"
    js.write_text(json.dumps([[3, 500], {"seconds": 2, "kbps": 700}]))
    assert parse_trace(js) == [Step(0, 3, 500), Step(3, 2, 700)]


@pytest.mark.parametrize("text", ["10,abc\n", "10,0\n", "", "10\n"])
def test_trace_errors(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(AdaptError):
        parse_trace(bad)


def test_offered_over_link_max_ignores_the_first_3_s_of_a_step() -> None:
    steps = [Step(0, 10, 8000), Step(10, 10, 1000)]
    # 1000 kbit/s (125 kB/s) in 10 frames a second throughout, plus a 5 Mbit burst at t=11
    sent = [(k / 10, 12_500) for k in range(200)] + [(11.0, 625_000)]
    assert offered_over_link_max(sent, steps) == pytest.approx(1.0)
    # a burst 3 s or more after the step counts: over [13, 16) 3 Mbit + 5 Mbit in 3 s
    sent.append((13.5, 625_000))
    assert offered_over_link_max(sent, steps) == pytest.approx((3000 + 5000) / 3 / 1000)


def test_collapse_is_a_gap_over_2_s_while_the_link_is_up() -> None:
    steps = [Step(0, 10, 8000), Step(10, 10, 1000)]
    steady = [k / 2 for k in range(1, 40)]
    assert not collapsed(steady, steps)
    assert collapsed([t for t in steady if not 12 < t < 14.6], steps)  # 2.5 s without results
    assert collapsed([t for t in steady if t < 17.5], steps)  # nothing in the last 2.5 s
    assert not collapsed([t for t in steady if not 12 < t < 13.9], steps)  # 1.9 s
    assert not collapsed(
        [t for t in steady if not 12 < t < 15], [Step(0, 12, 1000), Step(12, 3, 0)]
    )


def _events(t0: float, seconds: int, kbps: float, lost_after: float | None = None) -> list[dict]:
    events = []
    for seq, k in enumerate(range(seconds * 10)):
        t = t0 + k / 10
        nbytes = int(kbps * 1000 / 8 / 10)
        events.append({"e": "sent", "t": t, "seq": seq, "bytes": nbytes, "scale": 4})
        if lost_after is None or k / 10 < lost_after:
            events.append({"e": "back", "t": t + 0.05, "seq": seq, "bytes": nbytes, "lat_ms": 50.0})
    return events


def test_analyse_per_second_and_result() -> None:
    steps = [Step(0, 10, 8000), Step(10, 10, 1000)]
    out = analyse(_events(100.0, 20, 800), steps, 100.0, "fixed4")
    r = out["result"]
    assert set(r) == {
        "policy",
        "steps",
        "collapsed",
        "offered_over_link_max",
        "latency_ms_p50",
        "latency_ms_p95",
        "frames_lost",
        "offered_over_link_max_1s",
        "frames_sent",
        "lost_pct",
        "goodput_kbps",
        "queue_ms_p95",
        "frames_skipped_by_cloud",
    }
    assert r["policy"] == "fixed4" and not r["collapsed"] and r["frames_lost"] == 0
    assert r["offered_over_link_max"] == pytest.approx(0.8, rel=0.05)
    assert r["latency_ms_p50"] == 50.0
    assert [s["link_kbps"] for s in r["steps"]] == [8000, 1000]
    assert len(out["seconds"]) == 20
    sec = out["seconds"][3]
    assert sec["offered_kbps"] == pytest.approx(800, rel=0.01) and sec["scale"] == 4
    assert sec["arrived"] == 10 and sec["accuracy"] is None
    lost = analyse(_events(100.0, 20, 800, lost_after=16.0), steps, 100.0, "full")["result"]
    assert lost["collapsed"] and lost["frames_lost"] == 20  # sent 16..17.9 s, 2 s before the end


def test_per_window_queue_delay_loss_and_the_goals_figures() -> None:
    """Queue delay from arrival minus send (two clocks, an offset of hours) relative to its
    minimum; lost frames per second; offered/link per 1-s window after 2 s of a step."""
    steps = [Step(0, 5, 2000), Step(5, 5, 1000)]
    events, t0, offset = [], 100.0, 7_200 * 10**9
    for seq in range(100):  # 10 frames a second of 1500 kbit/s: over the 1000 link at 5 s
        t = t0 + seq / 10
        events.append({"e": "sent", "t": t, "seq": seq, "bytes": 18_750, "scale": 2})
        queue_ms = 0.0 if seq < 50 else 30.0 * (seq - 50)  # a queue builds from 5 s
        if seq >= 50 and seq % 5 == 0 and seq < 75:
            continue  # lost
        sent_ns = int(seq * 1e8)
        back = {"e": "back", "t": t + 0.06 + queue_ms / 1e3, "seq": seq, "bytes": 18_750}
        back.update(lat_ms=60.0 + queue_ms, sent_ns=sent_ns, arr_ns=sent_ns + offset + int(5e7))
        back["arr_ns"] += int(queue_ms * 1e6)
        events.append(back)
    out = analyse(events, steps, t0, "controller")
    r, secs = out["result"], out["seconds"]
    assert [s["queue_ms"] for s in secs[:5]] == [0.0] * 5  # no queue over the 2000 link
    assert 200 < secs[6]["queue_ms"] < 600  # the frames arriving in second 6 waited 0.2-0.6 s
    assert [s["lost"] for s in secs] == [0] * 5 + [2, 2, 1, 0, 0]
    assert r["frames_sent"] == 100 and r["lost_pct"] == 5.0
    assert r["steps"][0]["offered_over_link_max_1s"] == pytest.approx(0.75)
    assert r["offered_over_link_max_1s"] == pytest.approx(1.5)  # the 1000 link, t >= 7 s
    assert r["queue_ms_p95"] > 900 and r["steps"][0]["queue_ms_p95"] == 0.0


def test_gcc_policy_backs_off_on_a_growing_queue_and_climbs_on_a_clear_link() -> None:
    gcc = GccPolicy(rate_kbps=1000.0)
    assert gcc.update(0.0, 0.0, 0.0) == 1000  # the first Knob
    now, sent, arrival = 0.0, 0, 5 * 10**15
    for seq in range(1, 120):  # 60 ms apart, 1 s of a clear link, then +20 ms a frame
        now += 0.06
        sent += 60_000_000
        arrival += 60_000_000 + (20_000_000 if seq > 60 else 0)
        gcc.on_stats(seq, sent, arrival, 7_000, now)
        if gcc.rate_kbps < 0.9 * gcc.published_kbps:
            break
    assert 60 < seq < 80 and gcc.rate_kbps < 0.9 * 1000  # before tbf's 0.4 s queue is full
    knob = gcc.update(now, 0.0, 0.0)
    assert knob is not None and knob < 900
    climbing = GccPolicy(rate_kbps=500.0)
    climbing.update(0.0, 0.0, 0.0)
    knobs = [climbing.update(t * 0.5, 0.5, 0.0) for t in range(1, 21)]
    assert climbing.rate_kbps == pytest.approx(500 * 1.08**10, rel=0.01)  # 8 %/s for 10 s
    assert sum(k is not None for k in knobs) < 10  # only on 10 % moves: each one is an IDR
    app_limited = GccPolicy(rate_kbps=1000.0)  # sends half of what it is asked for
    app_limited.update(0.0, 0.0, 0.0)
    for seq in range(1, 40):
        app_limited.on_stats(seq, seq * 60_000_000, 10**15 + seq * 60_000_000, 3_000, 0.0)
    for t in range(1, 11):
        app_limited.update(t * 0.5, 0.5, 0.0)
    assert app_limited.rate_kbps == 1000.0  # over 1.5 x the 400 arriving: holds, no decrease
    lossy = GccPolicy(rate_kbps=1000.0)
    lossy.update(0.0, 0.0, 0.0)
    assert lossy.update(0.5, 0.5, 0.4) == 800  # GCC's loss-based part: x (1 - loss / 2)


def test_window_and_resolution_policy_step_down_and_probe() -> None:
    w = WindowStats()
    for k in range(30):  # 3 s at scale 2, ~3 Mbit/s, only a third comes back
        w.sent(k / 10, k, 37_500)
        if k % 3 == 0:
            w.back(k / 10 + 0.05, k, 400.0)
    s = w.summary(3.0)
    assert s["offered_kbps"] == pytest.approx(3000, rel=0.1)
    assert s["loss"] > 0.5
    policy = ResolutionPolicy(scale=2)
    assert policy.update(s, 0.5) == 8  # goodput ~1 Mbit/s: only scale 8 fits 0.8 of it
    quiet = {"offered_kbps": 400.0, "goodput_kbps": 400.0, "loss": 0.0, "latency_ms": 40.0}
    quiet["due"] = 8.0
    scales = [policy.update(quiet, 0.5) for _ in range(20)]  # 1.5 s settling, 8 s hold
    assert scales[-1] == 4 and policy.probing  # probed the next finer scale after the hold


def test_no_privileges_is_one_line_and_exit_1(monkeypatch, capsys) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in netem.check_privileges()
    assert adapt.main(["--policy", "fixed4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs root" in err[0]


# --- over the namespaces ---------------------------------------------------------------------


def _why_not() -> str | None:
    reason = netem.check_privileges()
    if reason:
        return reason
    if not Path(adapt.DEFAULT_SEQUENCE).is_dir():
        return f"the real sequence {adapt.DEFAULT_SEQUENCE} is missing"
    return None


@pytest.mark.dds
@pytest.mark.slow
@pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))
@pytest.mark.parametrize("policy", ["resolution", "controller"])
def test_step_8_to_1_mbit_offered_under_link_and_frames_keep_arriving(
    tmp_path: Path, policy: str
) -> None:
    assert shutil.which("ip") and shutil.which("tc")
    if policy == "controller" and not adapt._controller_available():
        pytest.skip("controller not available yet")
    steps = [Step(0, 8, 8000), Step(8, 12, 1000)]
    # the controller starts on a rich entry (x1 CRF 25, about 4.4 Mbit/s), so the drop to
    # 1 Mbit/s must make it step down (from its default start it would sit near 0.5-0.8)
    params = {"start_kbps": 5000.0} if policy == "controller" else None
    # the resolution run also goes through the delay forwarder (20 ms each way)
    delay_ms = 20.0 if policy == "resolution" else 0.0
    run = adapt.run_policy(
        policy,
        steps,
        adapt.DEFAULT_SEQUENCE,
        "cloud_bilinear",
        tmp_path,
        quiet=True,
        controller_params=params,
        delay_ms=delay_ms,
    )
    mine = [n for n in netem.list_namespaces() if n.endswith(f"-{os.getpid()}")]
    assert mine == [], f"namespaces left behind: {mine}"
    if delay_ms:
        # capture-to-result includes the round trip through the forwarder
        assert run["result"]["latency_ms_p50"] >= 2 * delay_ms, run["result"]
        _check_scoring(run, policy, steps, tmp_path)
    seconds = run["seconds"]
    trace = " ".join(f"{r['t']}:{r['offered_kbps']:.0f}/{r['arrived']}" for r in seconds)
    after = [r for r in seconds if 11 <= r["t"] < 14]  # 3 s after the step
    offered = sum(r["offered_kbps"] for r in after) / len(after)
    why = f"{policy}: t:offered kbit/s/frames back: {trace}"
    assert offered < 1000, f"offered {offered:.0f} kbit/s 3 s after the step; {why}"
    assert all(r["arrived"] > 0 for r in seconds if r["t"] >= 11), why
    assert sum(r["arrived"] for r in seconds if r["t"] >= 8) > 50


def _check_scoring(run: dict, policy: str, steps: list[Step], log_dir: Path) -> None:
    """The payloads the probe kept decode and score offline against full-resolution labels."""
    from cloudseg.control.profile_run import pipeline_segment
    from cloudseg.selection.reference import load_labelled_sequence

    sequence = load_labelled_sequence(adapt.DEFAULT_SEQUENCE, device="cpu", progress=False)
    adapt.score_policy(run, policy, steps, log_dir, sequence, pipeline_segment(), 5.0, True)
    result = run["result"]
    assert result["miou_reference"] == "hr"
    assert result["miou"] is not None and 0.1 < result["miou"] <= 1.0, result
    assert sum(s["scored"] for s in result["steps"]) >= 3


def test_compare_to_fixed_picks_the_best_fixed_policy_that_fits() -> None:
    def run(*steps: tuple[int, int, float | None]) -> dict:
        rows = [{"sent": s, "lost": lost, "miou": m} for s, lost, m in steps]
        return {"result": {"steps": rows}}

    runs = {
        "full": run((100, 0, 0.60), (100, 60, 0.10)),  # fits step 0 only
        "fixed4": run((100, 1, 0.45), (100, 2, 0.44)),
        "controller": run((100, 0, 0.59), (100, 3, 0.43)),
    }
    compare_to_fixed(runs)
    s0, s1 = runs["controller"]["result"]["steps"]
    assert (s0["best_fixed_policy"], s0["miou_gap"]) == ("full", -0.01)
    assert (s1["best_fixed_policy"], s1["best_fixed_miou"]) == ("fixed4", 0.44)
    assert "best_fixed_miou" not in runs["full"]["result"]["steps"][0]
