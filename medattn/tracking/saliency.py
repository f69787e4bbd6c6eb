"""The interpret artifacts: one writer (``medattn interpret``) and one reader (figures, compare).

Layout of an interpret run::

    inputs/<image_id>.png                 the model's view of the image (de-normalised)
    saliency/<method>/<image_id>.npy      the raw map, float32
    saliency/index.csv                    id, label, prediction, score, target, method, file, input
    xai_scores.csv                        per-image scores (id, label, source, <score>...); source: a method,
                                          baseline_<b> or baseline_randomized_<method>
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medattn.tracking.names import INPUTS_DIR, SALIENCY_DIR, SALIENCY_INDEX, XAI_CSV
from medattn.tracking.runs import download, log_artifacts


def map_artifact(method: str, image_id: str) -> str:
    """Artifact path of one raw map, ``saliency/<method>/<image_id>.npy``."""
    return f"{SALIENCY_DIR}/{method}/{image_id}.npy"


def input_artifact(image_id: str) -> str:
    """Artifact path of one input image, ``inputs/<image_id>.png``."""
    return f"{INPUTS_DIR}/{image_id}.png"


class SaliencyWriter:
    """Collects the maps, inputs and index rows of an interpret run, then logs them at once."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="medattn-interpret-"))
        self.rows: list[dict] = []

    def add_input(self, image_id: str, image: np.ndarray) -> str:
        """Write the (H, W, 3) uint8 input of ``image_id``; returns its artifact path."""
        rel = input_artifact(image_id)
        path = self.workdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        return rel

    def add_map(self, method: str, image_id: str, attribution: np.ndarray, **row: object) -> str:
        """Write one raw map and its index row (``row`` holds label, prediction, score, target)."""
        rel = map_artifact(method, image_id)
        (self.workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(self.workdir / rel, attribution.astype(np.float32))
        self.rows.append({"id": image_id, **row, "method": method, "file": rel, "input": input_artifact(image_id)})
        return rel

    def log(self, per_image_scores: pd.DataFrame) -> pd.DataFrame:
        """Write ``saliency/index.csv`` and ``xai_scores.csv`` and log everything to the active run.

        Returns:
            The index frame.
        """
        index = pd.DataFrame(self.rows)
        index.to_csv(self.workdir / SALIENCY_INDEX, index=False)
        per_image_scores.to_csv(self.workdir / XAI_CSV, index=False)
        log_artifacts(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)  # logged, so nothing stays in TMPDIR
        return index


class SaliencyReader:
    """Reads an interpret run's index, maps and inputs back (downloads cached in one folder)."""

    def __init__(self, run_id: str, workdir: Path | None = None) -> None:
        self.run_id = run_id
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="medattn-saliency-"))
        if workdir is None:  # its own download cache goes with the reader (or at exit): nothing stays in TMPDIR
            weakref.finalize(self, shutil.rmtree, self.workdir, True)

    def index(self) -> pd.DataFrame:
        """``saliency/index.csv`` (ids as strings)."""
        return pd.read_csv(download(self.run_id, SALIENCY_INDEX, self.workdir), dtype={"id": str})

    def load_map(self, file: str) -> np.ndarray:
        """The raw map at artifact path ``file`` (the index's ``file`` column)."""
        return np.load(download(self.run_id, str(file), self.workdir))

    def load_input(self, file: str) -> np.ndarray:
        """The (H, W, 3) uint8 input at artifact path ``file`` (the index's ``input`` column)."""
        with Image.open(download(self.run_id, str(file), self.workdir)) as im:
            return np.asarray(im.convert("RGB"))


def read_csv(run_id: str, artifact: str, workdir: Path) -> pd.DataFrame:
    """A CSV artifact of a run (``id`` column as strings)."""
    return pd.read_csv(download(run_id, artifact, workdir), dtype={"id": str})
