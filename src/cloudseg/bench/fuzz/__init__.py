"""``cloudseg bench fuzz``: hostile messages against the running graph, over real DDS (issue 9).

The cloud process (``cloud_node``: decode, SR, segmentation) and the vehicle process
(``vehicle_node``: frame_selector, compressor, camera_labels) run as separate processes, as
``cloudseg run`` starts them, on a DDS domain of their own. A fuzzer node in this process then
sends N hostile messages (:data:`KINDS`, a round of every kind at a time in random order):

* Frames to the cloud: random bytes as payloads, truncated and bit-flipped H.264 access units
  of a real stream (frames of ``--input`` encoded with the project's ``FrameCompressor``), every
  codec string (valid ones on the wrong payload, unknown, empty, huge), zero and huge claimed
  sizes, every scale 0..255, negative, invalid and far-future stamps, seq jumps and reversals,
  NaN fields, PNG/JPEG headers claiming gigapixels, and raw CDR garbage on the frame topic;
* Knobs with out-of-range, NaN and inconsistent fields (each should be refused as a whole; the
  vehicle's Frames carry the seq of the Knob in force, so an accepted one shows);
* to the vehicle: camera Images whose sizes, steps, encodings and stamps are wrong, keyframe
  requests with absurd fields, and label Images (to camera_labels) of the wrong shape.

Every ``--valid-every`` hostile messages it sends a burst of valid frames (one GOP of the real
H.264 stream, IDR first, ``frame_id`` "fuzz_valid") and one valid camera image, and waits (up
to ``--answer-timeout`` s) until FrameStats for the burst come back. The vehicle's own Frames
are remapped to /fuzz/vehicle_frames (so its stream does not mix with the fuzzer's at the
cloud's decoder) and counted there. After the N messages a final batch of valid bursts decides
``still_serving``. Memory: the RSS of each node process (/proc) after warm-up (every kind sent
once, every allowed scale built) and at the end. ``--soak-minutes M`` runs the same loop for M
minutes and samples RSS along the way (``--valid-only``: only the valid stream, a looped run).

Plain ``--json``: one line ``{"sent", "crashes", "still_serving", "valid_frames_answered",
"rss_growth_mb", "per_kind", ...}``; ``crashes`` counts node processes that exited while the
fuzzer ran.
"""

from cloudseg.bench.fuzz.cli import main

__all__ = ["main"]
