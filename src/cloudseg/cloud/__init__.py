"""The multi-vehicle cloud core, as plain modules the cloud node calls (no rclpy here).

* :mod:`cloudseg.cloud.streams`: one entry per vehicle stream (its namespace): decoders,
  sequence and loss tracking, keyframe-request state, counters, last-seen time; idle streams
  are forgotten. `stream_topic` joins a namespace with a topic name.
* :mod:`cloudseg.cloud.batcher`: the newest decoded frame of each stream, collected into
  batches (``max_batch`` frames or ``max_wait_ms``), grouped by (size, scale, mode).
* :mod:`cloudseg.cloud.inference`: the slot the GPU work plugs into (`Inference`,
  `BatchResult`), one call per group; :mod:`cloudseg.cloud.local` (`LocalInference`, the lean
  path) and `cloudseg.triton.client` fill it, :mod:`cloudseg.cloud.engines` picks one.
* :mod:`cloudseg.cloud.service`: `CloudService`, the models behind it: one
  `cloudseg.restore.RestorationPipeline` (restore + segment) per downsampling scale, built
  once on the device, and the single-stream decode -> labels path of the split cloud.
* :mod:`cloudseg.cloud.router`: each result of a batch back to its own stream (labels at that
  frame's camera size, its FrameStats fields).
"""
