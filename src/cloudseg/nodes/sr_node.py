"""SR node on its own (a split cloud, `cloud_split`; or `cloud_bilinear`, the LR-bilinear
baseline): restores the root namespace's only stream, newest frame first.

Frames are received and decoded as `cloudseg.nodes.cloud_ingest` says; restoration runs in a
worker thread on the newest decoded frame only (`cloudseg.newest.NewestFirst`: a frame that
waited is worth less than a new one; frames replaced before the worker took them are skipped
and counted in FrameStats). It builds the cloud process's pipeline restoring only
(`CloudService(restore_only=True)`: no segmenter) on its `device`, and publishes the restored
image (rgb8) on /cloudseg/restored, with a `RestoredInfo` (seq, scale, camera size; published
just before the image, same header) on /cloudseg/restored/info and the FrameStats of the frame.
With `restored_size: segmenter` (the split cloud) the image has the size the segmentation node
segments at, as the cloud process restores it: the backend's trained resolution (1024x512 for
ESPNetv2 from a 2048x1024 camera: SR x2 from a x4 stream), at most `cpu_max_width` wide on a
CPU. The segmentation node then segments it as it is and scales its labels back to the camera
size the RestoredInfo gives. With `restored_size: camera` (the bilinear baseline) it has the
camera size (at most `cpu_max_width` wide on a CPU; 0 = no cap).

In the cloud process the `sr` node is `cloudseg.nodes.cloud_sr` instead.
"""

from __future__ import annotations

from cloudseg.cloud.router import StreamFrame, frame_stats
from cloudseg.cloud.service import CloudService
from cloudseg.graph import RESTORED_INFO_TOPIC, RESTORED_TOPIC, STATS_TOPIC
from cloudseg.media.resize import upsample_bilinear
from cloudseg.msg import FrameStats, RestoredInfo
from cloudseg.newest import NewestFirst
from cloudseg.nodes.cloud_ingest import CloudIngest
from cloudseg.nodes.common import drop_input, qos_for, run_node, stop_worker
from cloudseg.nodes.convert import numpy_to_image


class SRNode(CloudIngest):
    """The standalone restorer: one stream, one frame at a time, restored image out."""

    def __init__(self) -> None:
        super().__init__(composed=False)
        self.worker: NewestFirst[StreamFrame] | None = None  # once up
        p = self.params
        self.service = CloudService.from_params(
            p,
            scales=self.limits.scales,
            restore_only=True,
            seg_size="full" if p["restored_size"] == "camera" else "trained",
        )
        self.info_pub = self.create_publisher(
            RestoredInfo, RESTORED_INFO_TOPIC, qos_for(RESTORED_INFO_TOPIC)
        )
        self.stats_pub = self.create_publisher(FrameStats, STATS_TOPIC, qos_for(STATS_TOPIC))
        self.worker = NewestFirst(
            self.restore_job,
            name="sr-worker",
            keep=lambda f: f.profiling,
            on_error=lambda job, exc: drop_input(
                self, "restore", exc, what=f"frame {job.seq} restoration"
            ),
        )
        self.add_stream(self.home, fixed=True)
        self.log_start(
            f"{RESTORED_TOPIC} ({p['restore']}) at the {p['restored_size']} size: "
            + self.service.describe()
        )

    def take(self, namespace: str, frame: StreamFrame) -> None:
        """The newest decoded frame only: one the worker had not taken yet is skipped (the
        controller's profiling frame is kept: it comes once)."""
        self.worker.offer(frame)

    def restore_job(self, f: StreamFrame, skipped: int) -> None:
        """The worker: restore one frame (the newest when the worker was free)."""
        route = self.service.new_route(f.lr.shape, f.scale, f.sr_bypass)
        if route:
            self.get_logger().info(route)
        image = self.service.restore_image(f.lr, f.scale, f.sr_bypass)
        k = image.reduced_by
        size = (max(1, f.width // k), max(1, f.height // k))
        rgb = upsample_bilinear(image.rgb, size)  # exactly 1/k of the camera (x3: 682 -> 2046)
        sr_bypass = image.mode != "sr"
        if self.params["publish_restored"]:
            info = RestoredInfo(
                header=f.header,
                seq=f.seq,
                scale=f.scale,
                width=f.width,
                height=f.height,
                reduced_by=min(k, 255),
                sr_bypass=sr_bypass,
            )
            self.info_pub.publish(info)  # first: the segmentation node looks it up by stamp
            self.endpoints[self.home].restored_pub.publish(numpy_to_image(rgb, "rgb8", f.header))
        stats = frame_stats(
            f,
            sr_bypass=sr_bypass,
            sr_ms=image.sr_ms,
            untrained=bool(image.untrained),
            frames_skipped=skipped,
        )
        self.stats_pub.publish(FrameStats(header=f.header, **stats))

    def destroy_node(self) -> None:
        stop_worker(self, "worker", "the SR worker")
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(SRNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
