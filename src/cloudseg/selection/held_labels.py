"""Labels for every camera frame: the newest labels from the cloud, how old they are, and
optionally warped to the current frame by dense optical flow.

With frame selection only some frames go to the cloud, and their labels come back later. A
vehicle consumer still wants a label map for each camera frame and to know how stale it is:
:class:`LabelHolder` keeps the newest labels (by the capture stamp of the frame they came
from) and answers for each camera frame with :class:`HeldLabels` (source seq, source stamp,
age). ``warp=True`` moves the labels along OpenCV's Farneback flow from the labels' frame to
the current one (as video segmentation does, e.g. Zhu et al., "Deep feature flow", CVPR 2017);
`cloudseg bench selector --warp` measures it against not warping.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cloudseg.media.resize import check_rgb

FLOW_WIDTH = 256
"""Width of the grey copies the flow is computed on (cost: a few ms a frame on one core)."""


def flow_frame(rgb: np.ndarray, width: int = FLOW_WIDTH) -> np.ndarray:
    """The small grey copy of a frame that flow is computed on."""
    check_rgb(rgb, "frame")
    h, w = rgb.shape[:2]
    height = min(max(1, round(h * width / w)), 8 * width)  # a 1 x N frame: not 256 x 256N
    small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


def warp_labels(
    labels: np.ndarray, source_grey: np.ndarray, current_grey: np.ndarray
) -> np.ndarray:
    """Labels of the frame ``source_grey`` moved to the frame ``current_grey``.

    Backward warping: the flow from the current frame to the source says where each current
    pixel was; its label is read there (nearest neighbour, border pixels repeated).
    """
    if source_grey.shape != current_grey.shape:
        return labels  # another camera size: nothing to warp with
    flow = cv2.calcOpticalFlowFarneback(current_grey, source_grey, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    lh, lw = labels.shape[:2]
    fh, fw = flow.shape[:2]
    flow = cv2.resize(flow, (lw, lh), interpolation=cv2.INTER_LINEAR)
    flow[..., 0] *= lw / fw
    flow[..., 1] *= lh / fh
    grid_x, grid_y = np.meshgrid(np.arange(lw, dtype=np.float32), np.arange(lh, dtype=np.float32))
    return cv2.remap(
        labels,
        grid_x + flow[..., 0],
        grid_y + flow[..., 1],
        cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_REPLICATE,
    )


def held_sources(n: int, sent: Sequence[int]) -> list[int]:
    """For each of ``n`` camera frames, the index of the last frame sent at or before it
    (whose labels the vehicle holds then); the first frame must be sent."""
    if not sent or sent[0] != 0:
        raise ValueError("the first frame must be sent")
    out, j = [], 0
    for t in range(n):
        while j + 1 < len(sent) and sent[j + 1] <= t:
            j += 1
        out.append(sent[j])
    return out


@dataclass(frozen=True)
class HeldLabels:
    """The labels held for one camera frame."""

    labels: np.ndarray  # HxW uint8 train ids
    source_seq: int  # Frame.seq of the frame they were computed from (-1: unknown)
    source_stamp_ns: int  # capture stamp of that frame
    age_ms: float  # camera frame's capture stamp minus the source's
    warped: bool


class LabelHolder:
    """Keeps the newest labels from the cloud and answers for each camera frame."""

    def __init__(self, warp: bool = False, keep_frames: int = 64) -> None:
        self.warp = warp
        self.keep_frames = keep_frames
        self._greys: OrderedDict[int, np.ndarray] = OrderedDict()  # stamp -> flow frame
        self._labels: tuple[int, int, np.ndarray] | None = None  # (stamp, seq, labels)

    def add_camera_frame(self, stamp_ns: int, rgb: np.ndarray) -> None:
        """Remember a camera frame (only its small grey copy, only when warping)."""
        if self.warp:
            self._greys[stamp_ns] = flow_frame(rgb)
            while len(self._greys) > self.keep_frames:
                self._greys.popitem(last=False)

    def add_labels(self, stamp_ns: int, labels: np.ndarray, seq: int = -1) -> bool:
        """Take labels computed from the frame captured at ``stamp_ns``; older ones than those
        held are ignored (False)."""
        if self._labels is not None and stamp_ns < self._labels[0]:
            return False
        self._labels = (stamp_ns, seq, labels)
        return True

    def for_frame(self, stamp_ns: int, rgb: np.ndarray | None = None) -> HeldLabels | None:
        """The labels for the camera frame at ``stamp_ns`` (None before any came back)."""
        if self._labels is None:
            return None
        source_stamp, seq, labels = self._labels
        warped = False
        if self.warp and rgb is not None and source_stamp != stamp_ns:
            source = self._greys.get(source_stamp)
            if source is not None:
                labels = warp_labels(labels, source, flow_frame(rgb))
                warped = True
        return HeldLabels(labels, seq, source_stamp, (stamp_ns - source_stamp) / 1e6, warped)
