"""Connection health on the vehicle (plain logic): one line when the link goes down (what,
since when, what it does), one when it comes back, a new participant only when nothing
matched."""

from __future__ import annotations

import pytest

from cloudseg.link_health import RECREATE, WAIT, LinkHealth

T0 = 1_000_000.0


def _watch(health: LinkHealth, seconds, sent=0, stats=0, subs=0, pubs=0):
    """Observe once a second for `seconds` (a range of offsets from T0); the events."""
    return [e for t in seconds if (e := health.observe(T0 + t, sent, stats, subs, pubs))]


def test_no_match_is_one_line_then_recreate_every_retry_and_one_line_back():
    health = LinkHealth(timeout_s=5.0, retry_s=10.0, start=T0)
    events = _watch(health, range(0, 5))
    assert events == [] and not health.recreate_due(T0 + 4)
    events = _watch(health, range(5, 30))
    assert len(events) == 1 and not events[0].up and events[0].action == RECREATE
    assert "no subscriber matched on the frames topic since" in events[0].line
    assert "re-creating the DDS participant" in events[0].line
    dues = [t for t in range(5, 30) if health.recreate_due(T0 + t)]
    assert dues == [5, 15, 25]
    # the process starts again in place: a new LinkHealth goes on from the old one's state
    health, state = LinkHealth(timeout_s=5.0, retry_s=10.0, start=T0 + 26), health.state()
    health.resume(state, T0 + 26)
    assert not health.recreate_due(T0 + 27) and health.up is False
    back = _watch(health, [27], subs=1, pubs=1)
    assert len(back) == 1 and back[0].up
    assert "back after 27.0 s down, 3 participant re-creation(s)" in back[0].line
    assert _watch(health, range(28, 40), subs=1, pubs=1) == []  # said once


def test_the_first_match_is_not_news_and_missing_stats_only_wait():
    health = LinkHealth(timeout_s=5.0, retry_s=10.0, start=T0)
    assert _watch(health, [2], subs=1, pubs=1) == [] and health.up
    # frames go out from t=3, no stats come back: down after 5 s, but no new participant
    events = [e for t in range(3, 12) if (e := health.observe(T0 + t, t - 2, 0, 1, 1))]
    assert len(events) == 1 and events[0].action == WAIT
    assert "no stats back for the frames sent since" in events[0].line
    assert not health.recreate_due(T0 + 12)
    # stats again: back
    back = health.observe(T0 + 13, 11, 4, 1, 1)
    assert back is not None and back.up and "back after" in back.line


def test_frames_that_get_stats_keep_the_link_up():
    health = LinkHealth(timeout_s=2.0, retry_s=10.0, start=T0)
    events = [e for t in range(1, 30) if (e := health.observe(T0 + t, t, t - 1, 1, 1))]
    assert events == [] and health.up
    with pytest.raises(ValueError):
        LinkHealth(timeout_s=0)


@pytest.mark.dds
@pytest.mark.parametrize("tcp_peer", [True, False], ids=["tcp-peer-listens", "no-tcp-peer"])
def test_the_vehicle_process_reports_the_link_and_recreates_only_against_a_listening_tcp_peer(
    tmp_path, ros, tcp_peer
):
    """No cloud: one "down" line. With the TCP profile's peer listening (here a bare socket:
    the stall's signature is a connected peer that never matches) the process makes new
    participants and lives on; without a TCP peer (UDP discovery: no match means no cloud) it
    only says so. A frames subscriber appears: one "back" line."""
    import os
    import socket
    import sys

    from cloudseg.fastdds import PEER_ADDRESS_ENV, PEER_PORT_ENV
    from cloudseg.graph import FRAMES_TOPIC
    from cloudseg.msg import Frame
    from cloudseg.nodes.common import qos_for
    from cloudseg.processes import ManagedProcess
    from support import spin_until

    log = tmp_path / "vehicle.log"
    cmd = [sys.executable, "-m", "cloudseg.nodes.vehicle_node", "--ros-args"]
    cmd += ["-p", "link_timeout:=2.0", "-p", "link_retry:=3.0"]
    env = dict(os.environ)
    with socket.create_server(("127.0.0.1", 0)) as peer:
        if tcp_peer:
            env.update({PEER_ADDRESS_ENV: "127.0.0.1", PEER_PORT_ENV: str(peer.getsockname()[1])})
        vehicle = ManagedProcess.start(cmd, env=env, log=log)
        try:
            if tcp_peer:  # a second start of the nodes: the process began again in place
                started = lambda: log.read_text().count("[compressor]: compressing") >= 2  # noqa: E731
                assert spin_until(ros, started, 30), log.read_text()
            else:
                down = lambda: "link to the cloud down: no subscriber matched" in log.read_text()  # noqa: E731
                assert spin_until(ros, down, 30), log.read_text()
                assert spin_until(ros, lambda: False, 4.0) is False  # a retry's time passes
            text = log.read_text()
            assert text.count("link to the cloud down: no subscriber matched") == 1, text
            assert text.count("[compressor]: compressing") == (2 if tcp_peer else 1) or tcp_peer
            assert vehicle.alive()
            ros.create_subscription(Frame, FRAMES_TOPIC, lambda m: None, qos_for(FRAMES_TOPIC))
            assert spin_until(ros, lambda: "link to the cloud back after" in log.read_text(), 20)
            assert ("participant re-creation(s)" in log.read_text()) == tcp_peer
        finally:
            vehicle.stop(grace=5)
