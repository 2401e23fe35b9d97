"""Scoring the labels the vehicle gets back: mIoU against ground truth or full-resolution labels.

Plain Python (never imports rclpy): the monitor node hands :class:`LabelScorer` every original
camera image it sees (:meth:`~LabelScorer.add_original`, keyed by its header stamp) and every
label map that comes back (:meth:`~LabelScorer.add_labels`, same stamp); after the stream,
:meth:`~LabelScorer.finish` scores them with one
:class:`~cloudseg.metrics.ConfusionMatrix` over all frames whose labels came back.

The reference:

* ``"gt"``: the input is a folder of Cityscapes frames whose fine labels can be found
  (``.../leftImg8bit/<split>/<city>/X_leftImg8bit.png`` -> ``.../gtFine/<split>/<city>/
  X_gtFine_labelTrainIds.png``, else ``X_gtFine_labelIds.png``; or labels beside the frame).
  Frames without a label file are not scored.
* ``"hr"``: otherwise, the segmenter's own labels on the original full-resolution frame
  (:class:`~cloudseg.restore.pipeline.RestorationPipeline` without SR, mode ``"full"``; labels
  scaled to the camera size by nearest neighbour), computed in :meth:`finish`, after the
  stream, and only for frames whose labels came back.

Which input file an original image was is found by hashing its pixels (exact: the source
publishes the decoded frame as it is) against the frames of the input, read again in
:meth:`finish`. Stored labels are kept PNG-compressed (about 20 kB a frame instead of 2 MB).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cloudseg.data.bag import is_bag
from cloudseg.data.cityscapes import LABEL_IDS_SUFFIX, TRAIN_IDS_SUFFIX, load_label_train_ids
from cloudseg.data.folder import list_frame_files, read_rgb
from cloudseg.data.frames import DataError
from cloudseg.data.sources import open_source
from cloudseg.graph import BAG_IMAGE_TOPIC
from cloudseg.media.resize import resize_labels
from cloudseg.metrics import ConfusionMatrix

__all__ = [
    "REFERENCES",
    "LabelScorer",
    "Score",
    "find_ground_truth",
    "frame_digest",
]

log = logging.getLogger(__name__)

REFERENCES: dict[str, str] = {
    "gt": "ground truth",
    "hr": "the segmenter's labels on the full-resolution frames",
}
"""miou_reference -> what the received labels were compared with."""

_FRAME_STEM = re.compile(r"^(?P<stem>.+)_leftImg8bit\.[A-Za-z]+$")

RECEIVED = "received"
"""The label stream of the labels that came back from the cloud (one per frame sent)."""

Segmenter = Callable[[np.ndarray], np.ndarray]
"""HxWx3 uint8 RGB -> HxW uint8 train ids at the same size."""


def frame_digest(rgb: np.ndarray) -> str:
    """An exact fingerprint of a frame's pixels (and shape)."""
    rgb = np.ascontiguousarray(rgb)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((rgb.shape, rgb.dtype.str)).encode())
    h.update(memoryview(rgb).cast("B"))
    return h.hexdigest()


def _label_folders(image: Path) -> Iterator[Path]:
    """Where a frame's fine labels may be: its gtFine twin folder, then beside it."""
    for path in dict.fromkeys((image, image.resolve())):  # a symlinked frame: also its target's
        parts = path.parent.parts
        for i in range(len(parts) - 1, -1, -1):
            if parts[i].startswith("leftImg8bit"):  # leftImg8bit/, leftImg8bit_sequence/
                yield Path(*parts[:i], "gtFine", *parts[i + 1 :])
                break
        yield path.parent


def find_ground_truth(image: str | Path) -> Path | None:
    """The ``*_gtFine_labelTrainIds.png`` (else ``*_gtFine_labelIds.png``) of a Cityscapes frame
    ``X_leftImg8bit.<ext>``, or None when there is none."""
    image = Path(image)
    match = _FRAME_STEM.match(image.name)
    if match is None:
        return None
    for folder in _label_folders(image):
        for suffix in (TRAIN_IDS_SUFFIX, LABEL_IDS_SUFFIX):
            candidate = folder / f"{match['stem']}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _pack(labels: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV encodes any HxW uint8
        raise ValueError("cannot PNG-encode a label map")
    return data.tobytes()


def _unpack(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


@dataclass
class Score:
    """What :meth:`LabelScorer.finish` found. mIoU values are None when nothing was scored."""

    reference: str  # "gt" or "hr"
    miou: float | None
    miou_gt_classes: float | None  # over the classes present in the reference only
    frames_scored: int
    not_scored: dict[str, int] = field(default_factory=dict)  # reason -> frames

    def describe_not_scored(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in self.not_scored.items())


class LabelScorer:
    """Collects originals and received labels by stamp; scores them after the stream.

    ``input_path``, ``limit``, ``topic``: the input as the source node plays it (None: the
    generated test clip). ``backend`` and ``device``: the segmenter of the ``"hr"`` reference
    (built only when needed), or ``segmenter`` to supply that function directly.
    """

    def __init__(
        self,
        input_path: str | Path | None,
        *,
        limit: int = 0,
        topic: str = BAG_IMAGE_TOPIC,
        backend: str = "espnetv2",
        device: str = "auto",
        segmenter: Segmenter | None = None,
    ) -> None:
        self.input_path = None if input_path in (None, "") else Path(input_path)
        self.limit = int(limit or 0)
        self.topic = topic
        self.backend = backend
        self.device = device
        self._segmenter = segmenter
        self.files: list[Path] | None = None  # a frame folder's files, in playback order
        self.ground_truth: dict[Path, Path] = {}
        p = self.input_path
        if p is not None and p.is_dir() and not is_bag(p):
            self.files = list_frame_files(p)
            for file in self.files:
                label = find_ground_truth(file)
                if label is not None:
                    self.ground_truth[file] = label
        self.reference = "gt" if self.ground_truth else "hr"
        self._originals: dict[Hashable, tuple[str, tuple[int, int]]] = {}
        # stream -> key -> labels: "received" (what came back), "held" (per camera frame)
        self._labels: dict[str, dict[Hashable, bytes]] = {RECEIVED: {}}
        self._not_scored: dict[str, Counter[str]] = {RECEIVED: Counter()}

    def describe(self) -> str:
        if self.reference == "gt":
            return (
                f"scoring labels against ground truth ({len(self.ground_truth)} of "
                f"{len(self.files or ())} frames have gtFine labels)"
            )
        return f"scoring labels against {REFERENCES['hr']} ({self.backend})"

    # --- during the stream (called by the monitor) -------------------------------------------

    def add_original(self, key: Hashable, rgb: np.ndarray) -> None:
        """An original camera image, by its stamp."""
        self._originals[key] = (frame_digest(rgb), rgb.shape[:2])

    def add_labels(self, key: Hashable, labels: np.ndarray, stream: str = RECEIVED) -> None:
        """A label map for the frame stamped ``key`` (HxW uint8 train ids): one that came back
        (``stream="received"``), or another stream scored apart, e.g. ``"held"``: the labels
        the vehicle holds for each camera frame."""
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.dtype != np.uint8:
            why = f"labels {labels.shape} {labels.dtype} are not HxW uint8"
            self._skip(stream, "malformed", why)
            return
        original = self._originals.get(key)
        if original is not None and labels.shape != original[1]:
            got, want = labels.shape, original[1]
            why = f"labels are {got[1]}x{got[0]}, the frame is {want[1]}x{want[0]}"
            self._skip(stream, "wrong size", why)
            return
        stored = self._labels.setdefault(stream, {})
        if key in stored:
            self._not_scored.setdefault(stream, Counter())["repeated"] += 1
            return
        stored[key] = _pack(np.ascontiguousarray(labels))

    def _skip(self, stream: str, reason: str, why: str) -> None:
        log.warning("labels not scored: %s", why)
        self._not_scored.setdefault(stream, Counter())[reason] += 1

    # --- after the stream ----------------------------------------------------------------------

    def _input_frames(self) -> Iterator[tuple[np.ndarray, Path | None]]:
        """(RGB, ground-truth file or None) of each frame the source plays, in order."""
        if self.files is not None:
            produced = 0
            for file in self.files:
                if self.limit and produced >= self.limit:
                    return
                rgb = read_rgb(file)
                if rgb is None:
                    continue
                produced += 1
                yield rgb, self.ground_truth.get(file)
            return
        source = open_source(self.input_path, limit=self.limit or None, topic=self.topic)
        for frame in source:
            yield frame.rgb, None

    def _reference_labels(self, rgb: np.ndarray) -> np.ndarray:
        """The segmenter's labels on the full-resolution frame, at its size."""
        if self._segmenter is None:
            from cloudseg.selection.reference import full_resolution_segmenter

            self._segmenter = full_resolution_segmenter(self.backend, self.device)
        return resize_labels(np.asarray(self._segmenter(rgb)), rgb.shape[1::-1])

    def finish(self) -> Score:
        """Score every frame whose labels came back; returns the Score."""
        return self.finish_all()[RECEIVED]

    def finish_all(self) -> dict[str, Score]:
        """Score every stream of labels (reading the input, and segmenting it for the "hr"
        reference, once for all streams); stream -> Score."""
        not_scored = {stream: Counter(c) for stream, c in self._not_scored.items()}
        for stream in self._labels:
            not_scored.setdefault(stream, Counter())
        wanted: dict[str, list[tuple[str, Hashable]]] = {}
        for stream, stored in self._labels.items():
            for key in stored:
                original = self._originals.get(key)
                if original is None:
                    not_scored[stream]["original not seen"] += 1
                else:
                    wanted.setdefault(original[0], []).append((stream, key))
        matrices = {stream: ConfusionMatrix() for stream in self._labels}
        scored: Counter[str] = Counter()
        if wanted:
            n = len({key for keys in wanted.values() for _, key in keys})
            log.info("scoring the labels of %d frames against %s", n, REFERENCES[self.reference])
        try:
            frames = self._input_frames() if wanted else iter(())
            for rgb, label_path in frames:
                keys = wanted.pop(frame_digest(rgb), None)
                if keys is None:
                    continue
                reference = self._reference_for(rgb, label_path, keys, not_scored)
                for stream, key in keys if reference is not None else ():
                    labels = _unpack(self._labels[stream][key])
                    if labels.shape != reference.shape:
                        log.warning(
                            "labels not scored: %dx%d, the reference is %dx%d",
                            labels.shape[1],
                            labels.shape[0],
                            reference.shape[1],
                            reference.shape[0],
                        )
                        not_scored[stream]["wrong size"] += 1
                        continue
                    matrices[stream].update(labels, reference)
                    scored[stream] += 1
                if not wanted:
                    break
        except DataError as exc:  # the input changed or broke since the stream read it
            log.warning("scoring stopped reading the input: %s", exc)
        for keys in wanted.values():
            for stream, _ in keys:
                not_scored[stream]["not in the input"] += 1
        return {
            stream: Score(
                reference=self.reference,
                miou=_num(cm.miou()) if scored[stream] else None,
                miou_gt_classes=_num(cm.miou(gt_classes_only=True)) if scored[stream] else None,
                frames_scored=scored[stream],
                not_scored=dict(not_scored[stream]),
            )
            for stream, cm in matrices.items()
        }

    def _reference_for(
        self,
        rgb: np.ndarray,
        label_path: Path | None,
        keys: list[tuple[str, Hashable]],
        not_scored: dict[str, Counter[str]],
    ) -> np.ndarray | None:
        """The reference labels of one input frame; None (counted for ``keys``) when missing."""
        if self.reference != "gt":
            return self._reference_labels(rgb)
        why = "no ground truth"
        if label_path is not None:
            try:
                return load_label_train_ids(label_path)
            except DataError as exc:
                log.warning("labels not scored: %s", exc)
                why = "unreadable ground truth"
        for stream, _ in keys:
            not_scored[stream][why] += 1
        return None
