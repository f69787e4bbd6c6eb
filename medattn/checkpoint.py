"""Checkpoint files: what ``best.pt``, ``last.pt`` and ``epoch_XXXX.pt`` hold, written atomically.

Every checkpoint embeds the resolved config, so a file alone is enough to rebuild its model
(``medattn test --ckpt PATH``). Tensors are stored on the CPU so that a checkpoint written on a GPU
loads on a CPU-only machine and vice versa. Only plain containers, numbers, strings and tensors are
stored, so loading uses ``torch.load(weights_only=True)``: no arbitrary code runs on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medattn.errors import MedattnError

FORMAT = "medattn-checkpoint-v1"
MANIFEST_FORMAT = "medattn-checkpoint-manifest-v1"


def to_cpu(obj: Any) -> Any:
    """Recursively move tensors to the CPU (detached)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states (weights-only-safe containers)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where GPUs are present)."""
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_tuplify(v) for v in obj)
    if isinstance(obj, tuple):
        return tuple(_tuplify(v) for v in obj)
    return obj


def save(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format marker) atomically: a temporary file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"format": FORMAT, **to_cpu(payload)}, tmp)
    os.replace(tmp, path)
    return path


def load(path: str | Path) -> dict[str, Any]:
    """Read a medattn checkpoint onto the CPU.

    Raises:
        MedattnError: the file is missing, truncated, or not a medattn checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise MedattnError(f"checkpoint {str(path)!r} does not exist; check the path.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError):
        raise MedattnError(
            f"checkpoint {str(path)!r} is truncated or corrupt; use another checkpoint (e.g. best.pt or an epoch_XXXX.pt)."
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MedattnError(
            f"{str(path)!r} is not a medattn checkpoint (no config inside); pass a checkpoints/*.pt file written by medattn train."
        )
    return data


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Manifest:
    """Size and SHA-256 of every checkpoint a run uploaded (``checkpoints/manifest.json``): a kill
    during an upload leaves a torn file that its entry does not match.

    MLflow copies a checkpoint into the artifact store without a rename, so a process killed during
    the copy leaves a truncated file under the right name. The manifest is uploaded after the
    checkpoints it lists, so a file that does not match its entry is incomplete, and ``--resume``
    falls back to an older complete checkpoint.

    Attributes:
        files: file name (``last.pt``) → ``{"sha256": hex, "bytes": size, "epoch": 0-based epoch}``.
    """

    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, path: str | Path, epoch: int) -> None:
        """Record the checksum of the local file ``path`` (under its file name)."""
        path = Path(path)
        self.files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size, "epoch": int(epoch)}

    def epoch(self, name: str) -> int | None:
        """The epoch ``name`` was written after, when the manifest lists it."""
        entry = self.files.get(name)
        return int(entry["epoch"]) if entry else None

    def problem(self, path: str | Path, name: str | None = None) -> str | None:
        """Why the downloaded ``path`` is not the file the manifest lists as ``name``; ``None`` when it is."""
        path = Path(path)
        entry = self.files.get(name or path.name)
        if entry is None:
            return "not in the checksum manifest"
        size = path.stat().st_size if path.is_file() else -1
        if size != entry["bytes"]:
            return f"truncated or corrupt: {max(size, 0)} of {entry['bytes']} bytes"
        if sha256_file(path) != entry["sha256"]:
            return "truncated or corrupt: checksum mismatch"
        return None

    def to_json(self) -> str:
        """The manifest as JSON text."""
        return json.dumps({"format": MANIFEST_FORMAT, "files": self.files}, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse :meth:`to_json` output.

        Raises:
            ValueError: not a manifest (e.g. a truncated upload).
        """
        data = json.loads(text)
        if (
            not isinstance(data, dict)
            or data.get("format") != MANIFEST_FORMAT
            or not isinstance(data.get("files"), dict)
        ):
            raise ValueError("not a medattn checkpoint manifest")
        return cls(files={str(k): dict(v) for k, v in data["files"].items()})


@dataclass
class TrainState:
    """What ``checkpoints/last.pt`` holds: everything needed to continue a run exactly.

    ``best.pt`` holds a subset (model, config, epoch, metrics, num_classes, class_names): see
    :meth:`best_payload`.
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    scaler: dict[str, Any]
    epoch: int
    config: dict[str, Any]
    num_classes: int
    class_names: list[str]
    history: dict[str, list[float]] = field(default_factory=dict)
    best_value: float | None = None
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The plain mapping written to ``last.pt`` (shallow: tensors are not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def best_payload(self, metrics: dict[str, float]) -> dict[str, Any]:
        """The mapping written to ``best.pt`` when this epoch improved the selection metric."""
        return {
            "model": self.model,
            "config": self.config,
            "epoch": self.epoch,
            "metrics": metrics,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> TrainState:
        """Rebuild from :func:`load` output (older files may lack the bookkeeping keys)."""
        return cls(
            model=data["model"],
            optimizer=data.get("optimizer", {}),
            scheduler=data.get("scheduler"),
            scaler=data.get("scaler", {}),
            epoch=int(data.get("epoch", -1)),
            config=dict(data.get("config", {})),
            num_classes=int(data.get("num_classes", 0)),
            class_names=list(data.get("class_names", [])),
            history={k: list(v) for k, v in data.get("history", {}).items()},
            best_value=data.get("best_value"),
            best_epoch=int(data.get("best_epoch", -1)),
            best_metrics=dict(data.get("best_metrics", {})),
            rng=data.get("rng", {}),
        )
