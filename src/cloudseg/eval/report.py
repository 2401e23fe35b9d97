"""The aligned text table of an evaluation report."""

from __future__ import annotations

from typing import Any

from cloudseg.data.cityscapes import TRAIN_ID_NAMES

__all__ = ["UNTRAINED_LABEL", "format_table"]

UNTRAINED_LABEL = "UNTRAINED"


def format_table(report: dict[str, Any], per_class: bool = False) -> str:
    """The aligned text table of a report (plus per-class IoU when asked)."""
    mark = f" [{UNTRAINED_LABEL}: {', '.join(report['untrained'])}]" if report["untrained"] else ""

    def cell(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    against = "fine labels" if report["reference"] == "gt" else "the hr row's labels"
    lines = [
        f"{report['frames']} frames of {report['data']}"
        + (f" ({report['split']})" if report["split"] else "")
        + f", scored against {against}; stream: {report['codec']}{mark}",
        f"pipeline: {report['pipeline']}",
        f"{'row':<10} {'kbit/s':>8} {'PSNR dB':>8} {'SSIM':>7} {'mIoU':>7} {'mIoU-gt':>7} "
        f"{'pixAcc':>7} {'ms/frame':>9}",
    ]
    for name, values in report["rows"].items():
        total = report["timings_ms"][name].get("total")
        label = f"{name}{' ' + UNTRAINED_LABEL if mark else ''}"
        kbps = values["kbps"]
        kbps_text = ("raw" if name == "hr" else "-") if kbps is None else f"{kbps:8.0f}"
        lines.append(
            f"{label:<10} {kbps_text:>8} {cell(values['psnr'], '8.2f'):>8} "
            f"{cell(values['ssim'], '7.4f'):>7} "
            f"{cell(values['miou'], '7.3f'):>7} {cell(values['miou_gt_classes'], '7.3f'):>7} "
            f"{cell(values['pixel_accuracy'], '7.3f'):>7} "
            f"{cell(total, '9.0f'):>9}"
        )
    lines.append(
        "mIoU: all classes seen in ground truth or prediction (cityscapesScripts); "
        "mIoU-gt: classes present in the ground truth only"
    )
    if per_class:
        names = list(report["per_class"])
        lines.append("")
        lines.append(f"{'class IoU':<14}" + "".join(f"{n:>9}" for n in names))
        for cls in TRAIN_ID_NAMES:
            lines.append(
                f"{cls:<14}"
                + "".join(f"{cell(report['per_class'][n][cls], '9.3f'):>9}" for n in names)
            )
    if mark:
        lines.append(f"{UNTRAINED_LABEL}: random weights, the numbers above are meaningless")
    return "\n".join(lines)
