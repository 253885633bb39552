"""The human-readable report.md of a bundle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from converter.validate import Validation


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_report(
    model_name: str,
    validation: Validation,
    deployable: bool,
    verdict: str,
    calibration: Mapping[str, Any] | None,
    quantization: Mapping[str, Any] | None,
    tools: Mapping[str, str],
) -> str:
    """Markdown: what INT8 costs in accuracy and gains in speed and size, and whether it may be deployed."""
    lines = [f"# yolo-edge bundle: {model_name}", ""]
    lines.append(f"**Deployable: {'yes' if deployable else 'no'}** — {verdict}")
    lines += ["", "## Validation", ""]
    count = f"{validation.images} images"
    if validation.instances is not None:
        count += f", {validation.instances} labelled objects"
    lines.append(f"Source: {validation.source} ({count}; {validation.skipped} unreadable skipped).")
    lines.append(f"Latency: median onnxruntime `run` on this host, {validation.threads} threads, same images.")
    if validation.exact_int8_accuracy:
        lines.append(
            "INT8 accuracy: scored with exact integer arithmetic, as on ARM; this x86 CPU lacks VNNI, and "
            "onnxruntime's fast INT8 kernel here is less accurate (latency is from that fast kernel)."
        )
    lines.append("")
    if validation.labelled:
        lines += ["| precision | mAP50 | mAP50-95 | latency ms | size MB |", "|---|---|---|---|---|"]
        for figures in validation.figures.values():
            lines.append(
                f"| {figures.precision} | {_fmt(figures.map50)} | {_fmt(figures.map50_95)} | "
                f"{figures.latency_ms:.1f} | {figures.size_bytes / 1e6:.2f} |"
            )
    else:
        lines += [
            "No labels: INT8 is scored against FP32's own detections (confidence 0.25).",
            "",
            "| precision | agreement mAP50 | mean best IoU | latency ms | size MB |",
            "|---|---|---|---|---|",
        ]
        for figures in validation.figures.values():
            lines.append(
                f"| {figures.precision} | {_fmt(figures.agreement_map50)} | {_fmt(figures.mean_best_iou)} | "
                f"{figures.latency_ms:.1f} | {figures.size_bytes / 1e6:.2f} |"
            )
    if validation.speedup is not None:
        lines += ["", f"- INT8 speed-up over FP32: **{validation.speedup:.2f}x**"]
        lines.append(f"- INT8 size: **{validation.size_ratio:.2f}x** FP32")
    if validation.map_drop_points is not None:
        lines.append(f"- mAP50-95 drop: **{validation.map_drop_points:.2f} points**")
    if calibration:
        lines += ["", "## Calibration", ""]
        lines += [f"- {key}: {value}" for key, value in calibration.items()]
    if quantization:
        lines += ["", "## Quantization", ""]
        lines += [f"- {key}: {value}" for key, value in quantization.items()]
    lines += ["", "## Tools", ""]
    lines += [f"- {name} {version}" for name, version in tools.items()]
    return "\n".join(lines) + "\n"
