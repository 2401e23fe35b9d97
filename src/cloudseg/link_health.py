"""Connection health on the vehicle: do its frames reach the cloud?

The vehicle knows it from two things it can see without help: whether the frames topic has a
matched subscriber (DDS discovery), and whether `FrameStats` come back for the frames it sent
(the cloud publishes one for every frame it gets). :class:`LinkHealth` turns them into a state,
``up`` or ``down``, and says each change in ONE line: what, since when, and what the vehicle
does about it.

* No subscriber on the frames topic for ``timeout_s``: discovery has not matched. Measured cause
  with the TCP profiles (docs/deployment.md): Fast DDS 3.2.2's TCP client sometimes stalls right
  after the connection is bound (68 bytes each way, then nothing: it never asks for the cloud's
  logical ports), and no later announcement un-sticks it. A new participant does, so with the
  TCP profile (``recreate=True``) the action is ``recreate``, taken while the cloud's port
  accepts connections (a cloud that is down is waited for): the vehicle process starts again
  in place (`run_nodes`, `restart_in_place`: the same pid and log, a new participant; tearing
  the stalled one down hangs in rmw), at most once per ``retry_s`` while nothing matches;
  :meth:`state` / :meth:`resume` carry the state over. Without the TCP profile no match means
  no cloud: reported, action ``wait``.
* A subscriber, but no stats for frames sent ``timeout_s`` ago or more: the frames go somewhere
  that does not answer (a cloud that is down or overloaded, or only a recorder or viewer
  subscribes): reported, action ``wait``. A new participant would not help here, and a vehicle
  host whose own recorder subscribes to the frames hides a missed cloud match from the first
  check: that case is reported, not recovered.

Plain Python (no ROS): the vehicle node feeds it counters once a second; tests drive it with
their own clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

#: What the vehicle does about a down link.
RECREATE, WAIT = "recreate", "wait"


@dataclass(frozen=True)
class LinkEvent:
    """A change of state: ``line`` is the one log line, ``action`` RECREATE or WAIT (down),
    or "" (back up)."""

    up: bool
    line: str
    action: str = ""


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


class LinkHealth:
    """Up/down state of the vehicle's link to the cloud, from counters polled by the node.

    ``observe(now, sent, stats, frame_subscribers, stats_publishers)`` with the totals of frames
    sent and stats received so far, and the current matched counts. Returns a
    :class:`LinkEvent` when the state changes, and ``recreate_due(now)`` says when to re-create
    the participant (the first time at the change to down, then every ``retry_s``).
    ``now`` is wall-clock seconds (``time.time()``), so the lines can say since when.
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        retry_s: float = 10.0,
        start: float | None = None,
        recreate: bool = True,
    ):
        if timeout_s <= 0 or retry_s <= 0:
            raise ValueError("timeout_s and retry_s must be > 0")
        self.timeout_s, self.retry_s = float(timeout_s), float(retry_s)
        self.up: bool | None = None  # None: not known yet (nothing matched, nothing sent)
        self.down_since = 0.0
        self.recreations = 0
        self._unmatched_since: float | None = time.time() if start is None else start
        self._waiting_since: float | None = None  # first frame sent after the last stats
        self._sent = self._stats = 0
        self._last_recreate = -float("inf")
        self._action = WAIT
        # re-create only where it helps: the TCP profile's stall (with UDP multicast or a
        # discovery server, no match means no cloud, and a new participant changes nothing)
        self.recreate = bool(recreate)

    def observe(
        self, now: float, sent: int, stats: int, frame_subscribers: int, stats_publishers: int
    ) -> LinkEvent | None:
        if stats > self._stats:
            self._waiting_since = None
        elif sent > self._sent and self._waiting_since is None:
            self._waiting_since = now
        self._sent, self._stats = sent, stats
        if frame_subscribers:
            self._unmatched_since = None
        elif self._unmatched_since is None:
            self._unmatched_since = now
        problem = self._problem(now, frame_subscribers, stats_publishers)
        if problem is None:
            if not frame_subscribers or self.up:
                return None
            was_down, self.up = self.up is False, True
            if not was_down:
                return None  # the first match: not news
            restarts = (
                f", {self.recreations} participant re-creation(s)" if self.recreations else ""
            )
            line = f"link to the cloud back after {now - self.down_since:.1f} s down{restarts}"
            self.recreations = 0
            return LinkEvent(True, line)
        what, since, self._action = problem
        if self.up is False:
            return None  # still down: said once
        self.up, self.down_since = False, since
        self._last_recreate = -float("inf")
        does = (
            f"re-creating the DDS participant while the cloud listens, every {self.retry_s:g} s "
            "until one matches"
            if self._action == RECREATE
            else "sending on and watching"
        )
        return LinkEvent(
            False, f"link to the cloud down: {what} since {_clock(since)}; {does}", self._action
        )

    def _problem(
        self, now: float, subscribers: int, publishers: int
    ) -> tuple[str, float, str] | None:
        """(what, since, action) while the link is down, else None."""
        if self._unmatched_since is not None and now - self._unmatched_since >= self.timeout_s:
            action = RECREATE if self.recreate else WAIT
            return "no subscriber matched on the frames topic", self._unmatched_since, action
        if self._waiting_since is not None and now - self._waiting_since >= self.timeout_s:
            what = "no stats back for the frames sent"
            if not publishers:
                what += " (nothing publishes stats: no cloud, only other subscribers)"
            return what, self._waiting_since, WAIT
        return None

    def recreate_due(self, now: float) -> bool:
        """True when the participant should be re-created now (down, action RECREATE, and the
        last re-creation ``retry_s`` ago or more); counts it."""
        if self.up is not False or self._action != RECREATE:
            return False
        if now - self._last_recreate < self.retry_s:
            return False
        self._last_recreate = now
        self.recreations += 1
        return True

    def state(self) -> str:
        """What a restarted process needs to go on (`resume`): "down_since,recreations"."""
        return f"{self.down_since:.3f},{self.recreations}"

    def resume(self, state: str, now: float) -> None:
        """Go on after a re-creation (a new process, counters at zero): still down since
        then, the next re-creation ``retry_s`` from ``now``."""
        since, count = state.split(",")
        self.up, self.down_since, self.recreations = False, float(since), int(count)
        self._unmatched_since, self._action, self._last_recreate = float(since), RECREATE, now
