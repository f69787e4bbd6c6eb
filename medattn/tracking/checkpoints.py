"""Checkpoints in a run's artifact store: uploaded with their checksums, resumed from the newest complete one.

MLflow copies a file into the artifact store without a temporary name, so a process killed during
the copy of ``checkpoints/last.pt`` leaves a truncated file. Every upload is therefore
followed by ``checkpoints/manifest.json`` (:class:`medattn.checkpoint.Manifest`: size and SHA-256
of each file), and :func:`newest_complete_checkpoint` tries ``last.pt``, then the periodic
``epoch_XXXX.pt`` files from the newest, skipping any that does not match its entry or does not load.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow

from medattn import checkpoint as ckpt_io
from medattn.errors import MedattnError
from medattn.tracking.logs import log_artifact, log_text
from medattn.tracking.names import CHECKPOINT_DIR, CHECKPOINT_MANIFEST, LAST_CKPT
from medattn.tracking.runs import download

_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


def log_checkpoints(paths: Sequence[Path], manifest: ckpt_io.Manifest, epoch: int) -> None:
    """Upload checkpoint files to ``checkpoints/`` of the active run, then the manifest listing them.

    Args:
        paths: local checkpoint files written after ``epoch``.
        manifest: the run's manifest so far; updated in place.
        epoch: the 0-based epoch the files hold.
    """
    for path in paths:
        log_artifact(path, CHECKPOINT_DIR)
        manifest.add(path, epoch)
    log_text(manifest.to_json(), CHECKPOINT_MANIFEST)


def read_manifest(run_id: str) -> ckpt_io.Manifest | None:
    """The checksum manifest of ``run_id``; ``None`` when the run has none (older runs) or it is unreadable."""
    try:
        with tempfile.TemporaryDirectory(prefix="medattn-manifest-") as tmp:  # nothing left in TMPDIR
            return ckpt_io.Manifest.from_json(download(run_id, CHECKPOINT_MANIFEST, tmp).read_text())
    except (MedattnError, ValueError, UnicodeDecodeError):
        return None


def resume_candidates(names: Sequence[str], manifest: ckpt_io.Manifest | None = None) -> list[str]:
    """The full training states among a run's checkpoint files, newest first.

    Args:
        names: file names under ``checkpoints/`` (``best.pt`` holds no optimiser and is never a candidate).
        manifest: gives each file's epoch; without it, ``last.pt`` counts as newest.

    Returns:
        Artifact paths: ``checkpoints/last.pt``, then ``checkpoints/epoch_XXXX.pt`` by epoch, descending.
    """

    def epoch(name: str) -> float:
        listed = manifest.epoch(name) if manifest is not None else None
        if listed is not None:
            return listed + (0.5 if name == Path(LAST_CKPT).name else 0.0)  # a tie: last.pt first
        match = _EPOCH_FILE.match(name)
        return int(match.group(1)) if match else float("inf")

    files = [n for n in names if n == Path(LAST_CKPT).name or _EPOCH_FILE.match(n)]
    return [f"{CHECKPOINT_DIR}/{n}" for n in sorted(files, key=epoch, reverse=True)]


@dataclass(frozen=True)
class Resumable:
    """The checkpoint a resumed run continues from.

    Attributes:
        payload: the loaded training state (:func:`medattn.checkpoint.load`).
        artifact: its artifact path, e.g. ``checkpoints/epoch_0002.pt``.
        skipped: newer checkpoints passed over, each ``"<path> (<why>)"``.
        manifest: the run's manifest (empty for an older run), to be continued by the resumed run.
    """

    payload: dict[str, Any]
    artifact: str
    skipped: tuple[str, ...] = ()
    manifest: ckpt_io.Manifest = field(default_factory=ckpt_io.Manifest)


def newest_complete_checkpoint(run_id: str) -> Resumable:
    """Download the newest checkpoint of ``run_id`` that matches its checksum and loads.

    A file the manifest does not list (a run older than the manifest) only has to load.

    Raises:
        MedattnError: no checkpoint of the run is complete.
    """
    manifest = read_manifest(run_id)
    names = [Path(a.path).name for a in mlflow.MlflowClient().list_artifacts(run_id, CHECKPOINT_DIR)]
    skipped: list[str] = []
    # the payload is read into memory, so nothing is left in TMPDIR
    with tempfile.TemporaryDirectory(prefix="medattn-resume-") as tmp:
        for artifact in resume_candidates(names, manifest):
            name = Path(artifact).name
            path = download(run_id, artifact, Path(tmp) / name.removesuffix(".pt"))
            problem = manifest.problem(path, name) if manifest is not None and name in manifest.files else None
            if problem is None:
                try:
                    payload = ckpt_io.load(path)
                except MedattnError:
                    problem = "truncated or corrupt"
            if problem is None:
                return Resumable(payload, artifact, tuple(skipped), manifest or ckpt_io.Manifest())
            skipped.append(f"{artifact} ({problem})")
    found = "; ".join(skipped) or f"no {LAST_CKPT}"
    raise MedattnError(
        f"run {run_id} has no complete checkpoint to resume from ({found}); start a new run, or save "
        "periodic checkpoints with --save-freq N so that a torn last.pt has a fallback."
    )
