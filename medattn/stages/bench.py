"""``medattn bench``: training, inference and explanation throughput, measured in one process.

For each model it measures, with warm-up iterations excluded and CUDA synchronised around every
timed region:

- ``pure_train_img_s``: fwd + bwd + Adam on one random batch already on the device (bf16 autocast
  and channels_last on CUDA), through :func:`medattn.engine.train_one_epoch` — the ceiling.
- ``pipeline_train_img_s``: the real fast path of ``medattn train`` — the memory-mapped uint8
  cache of a synthetic data set written in the ISIC 2020 on-disk format, batches copied to the
  device and augmented there (:mod:`medattn.data.gpu`), same engine, precision and layout.
- ``files_train_img_s``: the same, but images decoded from the JPEG files with the PIL transforms
  on ``num_workers`` DataLoader workers.
- ``seed_config_train_img_s``: the original project's settings: batch 4, fp32, PIL transforms
  from the files on 0 workers, NCHW.
- ``infer_img_s``: eval forward under bf16 + channels_last (CUDA) on random device batches.
- ``attr_img_s`` / ``attr_single_img_s``: :func:`medattn.explain.attribute` per default method
  of the model (fp32/TF32), batched and one image per call.
- ``prepare`` (with ``--prepare``): :func:`medattn.data.prepare_bench.measure_prepare` on synthetic
  high-resolution files in the ISIC/MIMIC/APTOS layouts: ``prepare_img_s`` of ``medattn data
  prepare`` against ``serial_full_decode_img_s`` (full-resolution decoding on one core), per layout
  with the scaling over 1, 2, ... workers.

The result (device name, torch/timm/captum versions, date, settings, per-model rates, ratios
``pipeline/pure`` and ``pipeline/seed_config`` and the targets it is held to, in
:mod:`medattn.stages.bench_result`) is written as JSON after every model, so a run cut short still
leaves what it measured, and as a markdown table.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medattn import registry
from medattn.config import at_least, positive, set_field
from medattn.data import load_index, prepare_cache
from medattn.data.cache import available_cpus
from medattn.data.gpu import build_device_loader, wants_channels_last
from medattn.data.loader import build_loader
from medattn.data.prepare_bench import Layout, measure_prepare
from medattn.engine import autocast, train_one_epoch
from medattn.errors import ConfigError
from medattn.explain import attribute, methods_for
from medattn.models import MODELS, canonical_model_name, create_model, is_vit
from medattn.runtime import resolve_device, torch_flags
from medattn.stages.bench_inputs import _cycle, _repeat, _timed, write_synthetic_isic
from medattn.stages.bench_result import RATE_FIELDS, BenchResult, _fmt, markdown_table, prepare_line


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Options of ``medattn bench``.

    Attributes:
        models: model names, or ``("all",)``.
        batch_size: training batch of pure/pipeline/files.
        img_size: image side.
        steps: timed training steps (pure, pipeline).
        warmup: untimed steps before each timed region.
        seed_batch_size: batch of the seed configuration.
        seed_steps: timed steps of the seed configuration.
        files_steps: timed steps of the files path (slow: bounded by PIL decoding).
        num_workers: DataLoader workers of the files path.
        infer_batch_size: inference batch.
        infer_steps: timed inference batches.
        attr_batch_size: batched explanation size.
        attr_steps: timed batched explanation calls per method.
        single_steps: timed one-image explanation calls per method.
        num_images: images of the synthetic data set.
        source_size: ``(height, width)`` of its JPEG files (ISIC/APTOS photos are ~512×680 after
            the usual downscaling).
        nr_layers: DeiT blocks.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        compile: ``torch.compile`` the model for pure and pipeline.
        work_dir: where the synthetic data set is written (a temporary folder if ``None``).
        out: JSON file to write (default: ``benchmarks/results/<device>-<date>.json`` for a full
            CUDA run, ``medattn-bench-<device>-<date>.json`` in the working directory otherwise).
        quick: tiny CPU settings for the test suite (:func:`quick_config`).
        prepare: also measure ``medattn data prepare`` on synthetic high-resolution files.
        prepare_workers: most workers of the prepare scaling series (``None``: every CPU).
    """

    models: tuple[str, ...] = ("all",)
    batch_size: int = 128
    img_size: int = 224
    steps: int = 20
    warmup: int = 5
    seed_batch_size: int = 4
    seed_steps: int = 25
    files_steps: int = 4
    num_workers: int = 8
    infer_batch_size: int = 256
    infer_steps: int = 10
    attr_batch_size: int = 32
    attr_steps: int = 3
    single_steps: int = 8
    num_images: int = 768
    source_size: tuple[int, int] = (512, 680)
    nr_layers: int = 12
    device: str = "auto"
    compile: bool = False
    work_dir: str | None = None
    out: str | None = None
    quick: bool = False
    prepare: bool = False
    prepare_workers: int | None = None

    def __post_init__(self) -> None:  # noqa: D105
        if self.prepare_workers is not None:
            at_least("prepare_workers", self.prepare_workers, 1, "1 or more (leave it out to use every CPU)")
        for key in (
            "batch_size",
            "img_size",
            "steps",
            "seed_batch_size",
            "seed_steps",
            "files_steps",
            "infer_batch_size",
            "infer_steps",
            "attr_batch_size",
            "attr_steps",
            "single_steps",
            "num_images",
        ):
            positive(key, getattr(self, key))
        if self.num_workers < 0 or self.warmup < 0:
            raise ConfigError("--num-workers and --warmup must be 0 or more.")
        names = [m.strip() for part in self.models for m in str(part).split(",") if m.strip()]
        if names and names != ["all"]:
            set_field(self, "models", tuple(registry.canonical("model", m) for m in names))


def quick_config(**overrides: Any) -> BenchConfig:
    """Tiny settings for the test suite on a CPU: 2 models, 32 px, batch 4, 2 steps, no warm-up."""
    base = dict(
        models=("resnet50", "deit_tiny"),
        batch_size=4,
        img_size=32,
        steps=2,
        warmup=0,
        seed_batch_size=4,
        seed_steps=1,
        files_steps=1,
        num_workers=0,
        infer_batch_size=4,
        infer_steps=1,
        attr_batch_size=2,
        attr_steps=1,
        single_steps=1,
        num_images=40,
        source_size=(40, 48),
        nr_layers=2,
        device="cpu",
        quick=True,
    )
    base.update({k: v for k, v in overrides.items() if v is not None})
    return BenchConfig(**base)


__all__ = [
    "BenchConfig",
    "bench",
    "default_out",
    "quick_config",
    "resolve_models",
]

log = logging.getLogger(__name__)
QUICK_PREPARE_LAYOUTS = {
    "isic_jpeg": Layout("isic2020", (240, 160), "RGB", "JPEG", 8),
    "aptos_png": Layout("aptos2019", (200, 120), "RGB", "PNG", 12),
}
"""``--quick --prepare``: small images in two layouts (the full run uses ``prepare_bench.DEFAULT_LAYOUTS``)."""


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": version("torchvision")}
    for name in ("timm", "captum", "medattn"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["cuda"] = str(torch.version.cuda)
    out["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none"
    return out


def _device_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {
            "type": "cuda",
            "name": props.name,
            "count": torch.cuda.device_count(),
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
        }
    return {
        "type": device.type,
        "name": platform.processor() or platform.machine(),
        "count": 1,
        "capability": None,
        "threads": torch.get_num_threads(),
    }


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def default_out(device: dict[str, Any], date: str, quick: bool) -> Path:
    """``benchmarks/results/<gpu>-<date>.json`` for full CUDA runs; elsewhere a file in the working
    directory (CPU and ``--quick`` numbers never land among the GPU results)."""
    name = f"{_slug(str(device.get('name')))}-{date[:10]}.json"
    if device.get("type") == "cuda" and not quick:
        return Path("benchmarks") / "results" / name
    return Path(f"medattn-bench-{name}")


# =============================================================================================
# measurements
# =============================================================================================
class _Bench:
    """One benchmark run: the device, the data set and the measurements of one model."""

    def __init__(self, cfg: BenchConfig, device: torch.device, index: Any) -> None:
        self.cfg, self.device, self.index = cfg, device, index
        self.cuda = device.type == "cuda"

    def model(self, name: str) -> nn.Module:
        torch.manual_seed(0)
        return create_model(name, 2, pretrained="none", img_size=self.cfg.img_size, nr_layers=self.cfg.nr_layers).to(
            self.device
        )

    def _train(self, model: nn.Module, batches: Iterable, amp: bool) -> int:
        opt = self._opt
        out = train_one_epoch(model, batches, opt, nn.CrossEntropyLoss(), self.device, amp=amp, progress=False)
        return out.n_images

    def train_rate(self, model: nn.Module, make_batches: Callable[[int], Iterable], steps: int, *, amp: bool) -> float:
        """images/s of ``steps`` training steps after ``warmup`` untimed ones (fresh Adam)."""
        self._opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        if self.cfg.warmup:
            self._train(model, make_batches(self.cfg.warmup), amp)
        return _timed(self.device, lambda: self._train(model, make_batches(steps), amp))

    def random_batch(self, batch: int, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator(device=self.device).manual_seed(0)
        x = torch.randn((batch, 3, self.cfg.img_size, self.cfg.img_size), device=self.device, generator=g)
        y = torch.randint(0, 2, (batch,), device=self.device, generator=g)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x, y

    def file_loader(self, batch: int, workers: int) -> torch.utils.data.DataLoader:
        """The PIL path over the JPEG files, decoded at reduced resolution as `medattn train` does without a
        cache (the cache is bypassed on purpose)."""
        return build_loader(
            self.index,
            "train",
            img_size=self.cfg.img_size,
            batch_size=batch,
            train=True,
            num_workers=workers,
            seed=0,
            use_cache=False,
            drop_last=True,
            pin_memory=self.cuda,
        )

    def measure(self, name: str, record: dict[str, Any], errors: list[str]) -> None:
        """Fill ``record`` with every rate of model ``name`` (failures go to ``errors``)."""
        cfg, dev = self.cfg, self.device
        amp = self.cuda
        model = self.model(name)
        record["params"] = sum(p.numel() for p in model.parameters())
        cl = wants_channels_last(dev, amp, vit=is_vit(model))
        record["channels_last"] = cl
        record["amp_bf16"] = amp

        def attempt(key: str, fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except Exception as exc:  # one failed measurement must not lose the rest of a timed GPU session
                errors.append(f"{name}/{key}: {type(exc).__name__}: {exc}")
                log.warning("bench %s/%s failed: %s", name, key, exc)
                if self.cuda:
                    torch.cuda.empty_cache()
                return None

        model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        fast = torch.compile(model) if cfg.compile else model
        batch = self.random_batch(cfg.batch_size, cl)
        record["pure_train_img_s"] = attempt(
            "pure_train", lambda: self.train_rate(fast, lambda n: _repeat(batch, n), cfg.steps, amp=amp)
        )
        batch = None  # free the device memory before the next measurement
        loader = build_device_loader(
            self.index,
            "train",
            img_size=cfg.img_size,
            batch_size=cfg.batch_size,
            device=dev,
            train=True,
            seed=0,
            channels_last=cl,
            drop_last=True,
        )
        record["pipeline_train_img_s"] = attempt(
            "pipeline_train", lambda: self.train_rate(fast, lambda n: _cycle(loader, n), cfg.steps, amp=amp)
        )
        files = self.file_loader(cfg.batch_size, cfg.num_workers)
        record["files_train_img_s"] = attempt(
            "files_train", lambda: self.train_rate(fast, lambda n: _cycle(files, n), cfg.files_steps, amp=amp)
        )
        files = None  # stop its workers before the next measurement
        # The original project's configuration: batch 4, fp32, NCHW, PIL on 0 workers, eager.
        model.to(memory_format=torch.contiguous_format)
        seed_files = self.file_loader(cfg.seed_batch_size, 0)
        record["seed_config_train_img_s"] = attempt(
            "seed_config_train",
            lambda: self.train_rate(model, lambda n: _cycle(seed_files, n), cfg.seed_steps, amp=False),
        )
        model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        record["infer_img_s"] = attempt("infer", lambda: self.infer_rate(model, cl, amp))
        record["attr_img_s"], record["attr_single_img_s"] = {}, {}
        model.to(memory_format=torch.contiguous_format)
        for method in methods_for(model):
            record["attr_img_s"][method] = attempt(
                f"attr/{method}",
                lambda m=method: self.attr_rate(attribute, model, m, cfg.attr_batch_size, cfg.attr_steps),
            )
            record["attr_single_img_s"][method] = attempt(
                f"attr_single/{method}", lambda m=method: self.attr_rate(attribute, model, m, 1, cfg.single_steps)
            )
        pipe, pure, seed = (
            record.get(k) for k in ("pipeline_train_img_s", "pure_train_img_s", "seed_config_train_img_s")
        )
        record["pipeline_over_pure"] = pipe / pure if pipe and pure else None
        record["pipeline_over_seed_config"] = pipe / seed if pipe and seed else None

    @torch.no_grad()
    def infer_rate(self, model: nn.Module, cl: bool, amp: bool) -> float:
        model.eval()
        x, _ = self.random_batch(self.cfg.infer_batch_size, cl)

        def run(n: int) -> int:
            with autocast(self.device, amp):
                for _ in range(n):
                    model(x)
            return n * x.shape[0]

        run(self.cfg.warmup)
        return _timed(self.device, lambda: run(self.cfg.infer_steps))

    def attr_rate(self, attribute: Callable, model: nn.Module, method: str, batch: int, steps: int) -> float:
        """images/s of :func:`medattn.explain.attribute` on ``batch`` images per call (fp32/TF32)."""
        x, _ = self.random_batch(batch, False)
        target = torch.zeros(batch, dtype=torch.long, device=self.device)

        def run(n: int) -> int:
            for _ in range(n):
                attribute(model, x, method, target)
            return n * batch

        run(min(1, self.cfg.warmup))
        return _timed(self.device, lambda: run(steps))


# =============================================================================================
# entry points
# =============================================================================================
def resolve_models(models: Sequence[str]) -> list[str]:
    """Canonical model names; ``all`` (or nothing) means every registered model."""
    names = [m.strip() for part in models for m in str(part).split(",") if m.strip()]
    if not names or names == ["all"]:
        return list(MODELS.names())
    return [canonical_model_name(m) for m in names]


def bench(cfg: BenchConfig, *, echo: Callable[[str], None] = print) -> BenchResult:
    """Measure training, inference and explanation throughput (``medattn bench``); write the JSON
    (after every model) and the markdown table.

    Torch's TF32 and cuDNN autotuning flags, which the measurements turn on, are restored on return.

    Args:
        cfg: the options (:func:`quick_config` for the tiny CPU version).
        echo: where progress lines and the final table go.

    Returns:
        The :class:`BenchResult` (``out`` is the JSON path; the table is next to it as ``.md``).

    Raises:
        ConfigError: an unavailable device, or too few images for the batch size.
    """
    with torch_flags():
        return _run(cfg, echo)


def _run(cfg: BenchConfig, echo: Callable[[str], None]) -> BenchResult:
    models = resolve_models(cfg.models)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # cuDNN autotuning for the fixed shapes; TF32 for the fp32 explanations and the seed config
        # (as any Ampere+ user of that configuration gets by default in cuDNN convolutions).
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    date = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    info = _device_info(device)
    settings = {
        **dataclasses.asdict(cfg),
        "models": models,
        "amp": "bf16" if device.type == "cuda" else "fp32",
        "channels_last": "CNNs on CUDA" if device.type == "cuda" else "no",
        "synthetic_format": "isic2020 (train.csv + jpeg/train/*.jpg)",
    }
    result = BenchResult(device=info, versions=_versions(), date=date, settings=settings)
    out = Path(cfg.out) if cfg.out else default_out(info, date, cfg.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.out = str(out)

    with tempfile.TemporaryDirectory(prefix="medattn-bench-") as tmp:
        root = Path(cfg.work_dir) if cfg.work_dir else Path(tmp)
        data_dir = root / "isic2020"
        echo(
            f"writing {cfg.num_images} synthetic ISIC-format JPEGs ({cfg.source_size[0]}x{cfg.source_size[1]}) "
            f"and their {cfg.img_size} px cache to {data_dir}"
        )
        t0 = time.perf_counter()
        write_synthetic_isic(data_dir, cfg.num_images, tuple(cfg.source_size))
        prepare_cache("isic2020", data_dir, img_size=cfg.img_size)
        echo(f"data ready in {time.perf_counter() - t0:.1f} s on {info['name']} ({device})")
        # throughput only: the synthetic images are not searched for near-duplicates
        index = load_index("isic2020", data_dir, duplicates="ignore")
        n_train = len(index.split("train"))
        if n_train < max(cfg.batch_size, cfg.seed_batch_size):
            raise ConfigError(
                f"--num-images {cfg.num_images} gives {n_train} training images, fewer than "
                f"--batch-size {cfg.batch_size}; raise --num-images."
            )
        bench = _Bench(cfg, device, index)
        for name in models:
            t0 = time.perf_counter()
            record: dict[str, Any] = {"model": name}
            bench.measure(name, record, result.errors)
            record["seconds"] = round(time.perf_counter() - t0, 1)
            result.models.append(record)
            out.write_text(json.dumps(result.to_json(), indent=2))
            echo(
                f"{name}: " + ", ".join(f"{k}={_fmt(record.get(k))}" for k in RATE_FIELDS) + f" ({record['seconds']} s)"
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if cfg.prepare:
        result.prepare = _measure_prepare(cfg, echo)
        out.write_text(json.dumps(result.to_json(), indent=2))
    table = markdown_table(result)
    out.with_suffix(".md").write_text(table + "\n")
    echo(table)
    if result.errors:
        echo(f"{len(result.errors)} measurement(s) failed: " + "; ".join(result.errors))
    echo(f"Wrote {out} and {out.with_suffix('.md')}")
    return result


def _measure_prepare(cfg: BenchConfig, echo: Callable[[str], None]) -> dict[str, Any]:
    """The ``--prepare`` field: prepare rates on synthetic high-resolution files (tiny ones with ``--quick``)."""
    workers = cfg.prepare_workers or (min(2, available_cpus()) if cfg.quick else None)
    layouts = QUICK_PREPARE_LAYOUTS if cfg.quick else None
    root = Path(cfg.work_dir) / "prepare" if cfg.work_dir else None
    echo(f"measuring `medattn data prepare` at {cfg.img_size} px on synthetic high-resolution files")
    doc = measure_prepare(root, img_size=cfg.img_size, workers=workers, layouts=layouts)
    echo(prepare_line(doc))
    return doc
