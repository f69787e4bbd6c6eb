"""What ``medattn bench`` writes: the result (schema ``medattn-bench/1``), the throughput targets it
is held to on CUDA, and its markdown table as ``docs/performance.md`` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA = "medattn-bench/1"
RATE_FIELDS = (
    "pure_train_img_s",
    "pipeline_train_img_s",
    "files_train_img_s",
    "seed_config_train_img_s",
    "infer_img_s",
)
"""Per-model images/s fields (besides the per-method ``attr_img_s`` and ``attr_single_img_s``)."""


TARGETS = {
    "pipeline_over_pure_min": 0.9,
    "resnet50_pipeline_over_seed_config_min": 15.0,
    "resnet50_deeplift_img_s_min": 500.0,
    "deit_tiny_transformer_lrp_batched_over_single_min": 20.0,
}
"""The throughput the GPU input path is built to reach on one H100/H200 (evaluated only when the
device is CUDA)."""


@dataclass
class BenchResult:
    """What :func:`bench` measured; :meth:`to_json` is the file's content.

    Attributes:
        device: ``{"type", "name", "count", "capability"}``.
        versions: python, torch, torchvision, timm, captum, cuda, cudnn, medattn.
        date: ISO-8601 UTC time of the start.
        settings: the resolved :class:`BenchConfig` plus the precision/layout used.
        models: one record per model (rates in images/s and the two ratios).
        errors: ``"model/measurement: message"`` for measurements that failed.
        out: the JSON file written.
        prepare: the ``--prepare`` measurement (:func:`medattn.data.prepare_bench.measure_prepare`), else ``None``.
    """

    device: dict[str, Any]
    versions: dict[str, str]
    date: str
    settings: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    out: str | None = None
    prepare: dict[str, Any] | None = None

    def targets(self) -> dict[str, Any]:
        """The :data:`TARGETS` against the measured rates (``None`` where not measured or not CUDA)."""
        by = {m["model"]: m for m in self.models}
        cuda = self.device.get("type") == "cuda"
        checks: dict[str, Any] = {"evaluated": cuda}
        ratios = [m.get("pipeline_over_pure") for m in self.models]
        checks["pipeline_over_pure_all_models"] = (
            all(r is not None and r >= TARGETS["pipeline_over_pure_min"] for r in ratios) if cuda and ratios else None
        )
        r50 = by.get("resnet50", {})
        ratio = r50.get("pipeline_over_seed_config")
        checks["resnet50_pipeline_over_seed_config"] = (
            ratio >= TARGETS["resnet50_pipeline_over_seed_config_min"] if cuda and ratio is not None else None
        )
        dl = r50.get("attr_img_s", {}).get("deeplift")
        checks["resnet50_deeplift"] = dl >= TARGETS["resnet50_deeplift_img_s_min"] if cuda and dl is not None else None
        deit = by.get("deit_tiny", {})
        b, s = (
            deit.get("attr_img_s", {}).get("transformer-lrp"),
            deit.get("attr_single_img_s", {}).get("transformer-lrp"),
        )
        checks["deit_tiny_transformer_lrp_batched_over_single"] = (
            b / s >= TARGETS["deit_tiny_transformer_lrp_batched_over_single_min"] if cuda and b and s else None
        )
        return checks

    def to_json(self) -> dict[str, Any]:
        """The JSON document (schema ``medattn-bench/1``)."""
        return {
            "schema": SCHEMA,
            "device": self.device,
            "versions": self.versions,
            "date": self.date,
            "settings": self.settings,
            "models": self.models,
            "targets": {"thresholds": TARGETS, "met": self.targets()},
            "errors": self.errors,
            "prepare": self.prepare,
        }


def prepare_line(doc: dict[str, Any]) -> str:
    """One markdown line of a ``prepare`` field: each layout's prepare rate against serial full decoding."""
    parts = [
        f"{name} ({lay['source']}) {lay['prepare_img_s']:,.1f} vs {lay['serial_full_decode_img_s']:,.1f} "
        f"(x{lay['prepare_speedup']:.1f})"
        for name, lay in doc["layouts"].items()
    ]
    return (
        f"Prepare at {doc['img_size']} px on {doc['workers']} workers, images/s (vs serial full-resolution "
        f"decoding): " + "; ".join(parts) + "."
    )


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def markdown_table(result: BenchResult | dict[str, Any]) -> str:
    """The markdown table of a result (or of a loaded JSON document), as ``docs/performance.md`` shows it.

    Args:
        result: a :class:`BenchResult` or the dict :meth:`BenchResult.to_json` produced.

    Returns:
        Markdown: a caption line (device, versions, date, settings) and one row per model.
    """
    doc = result.to_json() if isinstance(result, BenchResult) else result
    dev, ver, st = doc["device"], doc["versions"], doc["settings"]
    caption = (
        f"{dev['name']} ({dev['type']}), torch {ver['torch']}, timm {ver.get('timm')}, captum {ver.get('captum')}, "
        f"{doc['date'][:10]}; batch {st['batch_size']}, {st['img_size']} px, {st['amp']}, channels_last: "
        f"{st['channels_last']}; seed config: batch {st['seed_batch_size']}, fp32, PIL, 0 workers; "
        f"files: PIL on {st['num_workers']} workers. Images/s."
    )
    head = (
        "model",
        "pure train",
        "pipeline train",
        "files train",
        "seed config train",
        "pipeline/pure",
        "pipeline/seed",
        "inference",
        "attribution batched (1 image/call)",
    )
    lines = [caption, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in doc["models"]:
        attr = ", ".join(
            f"{k} {_fmt(v)} ({_fmt(m.get('attr_single_img_s', {}).get(k), 1)})"
            for k, v in m.get("attr_img_s", {}).items()
        )
        cells = [
            m["model"],
            *(_fmt(m.get(k)) for k in RATE_FIELDS[:4]),
            _fmt(m.get("pipeline_over_pure"), 2),
            _fmt(m.get("pipeline_over_seed_config"), 1),
            _fmt(m.get("infer_img_s")),
            attr,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if doc.get("prepare"):
        lines += ["", prepare_line(doc["prepare"])]
    return "\n".join(lines)
