"""The interpret artifacts: one writer (``medattn interpret``) and one reader (figures, compare).

Layout of an interpret run::

    inputs/<image_id>.png                 the model's view of the image (de-normalised)
    saliency/<method>/<image_id>.npy      the raw map, float32
    saliency/index.csv                    id, label, prediction, score, target, method, file, input
    saliency/id_map.csv                   id, name: ids whose file name had to change (only when one did)
    xai_scores.csv                        per-image scores (id, label, source, <score>...); source: a method,
                                          baseline_<b> or baseline_randomized_<method>

File names come from :func:`medattn.data.ids.safe_name` of the image id and method, never from the raw
id (a MIMIC id is a relative path; an id from someone else's table could hold ``..``), so every file
stays inside the writer's temporary folder and under its artifact prefix. The reader follows only
index paths under ``saliency/`` and ``inputs/`` (a store from someone else may hold any index).
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medattn.data.ids import safe_name
from medattn.data.io import ImageReadError, open_image
from medattn.errors import MedattnError
from medattn.tracking.logs import log_artifacts
from medattn.tracking.names import INPUTS_DIR, SALIENCY_DIR, SALIENCY_ID_MAP, SALIENCY_INDEX, XAI_CSV
from medattn.tracking.runs import download


def map_artifact(method: str, image_id: str) -> str:
    """Artifact path of one raw map, ``saliency/<method>/<image_id>.npy`` (file-safe names)."""
    return f"{SALIENCY_DIR}/{safe_name(method)}/{safe_name(image_id)}.npy"


def input_artifact(image_id: str) -> str:
    """Artifact path of one input image, ``inputs/<image_id>.png`` (file-safe name)."""
    return f"{INPUTS_DIR}/{safe_name(image_id)}.png"


def checked_artifact(run_id: str, file: object, prefix: str, suffix: str) -> str:
    """``file`` (a path from an index) when it is a plain artifact path under ``prefix/`` ending in ``suffix``.

    Raises:
        MedattnError: the path leaves ``prefix`` (``..``, absolute, backslash) or names another kind of file.
    """
    text = str(file)
    normal = posixpath.normpath(text)
    if (
        normal != text
        or not text.startswith(f"{prefix}/")
        or not text.endswith(suffix)
        or "\\" in text
        or "\0" in text
        or ".." in text.split("/")
    ):
        raise MedattnError(
            f"the saliency index of run {run_id!r} names {text!r}, which is not a {suffix} file under {prefix}/; "
            "medattn reads only the files its own interpret writes (re-run medattn interpret)."
        )
    return text


class SaliencyWriter:
    """Collects the maps, inputs and index rows of an interpret run, then logs them at once."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="medattn-interpret-"))
        self.rows: list[dict] = []
        self.renamed: dict[str, str] = {}  # image id → its file name, where the two differ

    def add_input(self, image_id: str, image: np.ndarray) -> str:
        """Write the (H, W, 3) uint8 input of ``image_id``; returns its artifact path."""
        rel = input_artifact(image_id)
        self._remember(image_id)
        path = self.workdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        return rel

    def add_map(self, method: str, image_id: str, attribution: np.ndarray, **row: object) -> str:
        """Write one raw map and its index row (``row`` holds label, prediction, score, target)."""
        rel = map_artifact(method, image_id)
        self._remember(image_id)
        (self.workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(self.workdir / rel, attribution.astype(np.float32))
        self.rows.append({"id": image_id, **row, "method": method, "file": rel, "input": input_artifact(image_id)})
        return rel

    def _remember(self, image_id: str) -> None:
        name = safe_name(image_id)
        if name != str(image_id):
            self.renamed[str(image_id)] = name

    def log(self, per_image_scores: pd.DataFrame) -> pd.DataFrame:
        """Write ``saliency/index.csv``, ``xai_scores.csv`` and (when an id had to change)
        ``saliency/id_map.csv``, and log everything to the active run.

        Returns:
            The index frame.
        """
        index = pd.DataFrame(self.rows)
        (self.workdir / SALIENCY_INDEX).parent.mkdir(parents=True, exist_ok=True)
        index.to_csv(self.workdir / SALIENCY_INDEX, index=False)
        if self.renamed:
            pd.DataFrame({"id": list(self.renamed), "name": list(self.renamed.values())}).to_csv(
                self.workdir / SALIENCY_ID_MAP, index=False
            )
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
        """The raw map at artifact path ``file`` (the index's ``file`` column; only under ``saliency/``).

        Raises:
            MedattnError: ``file`` is not a ``.npy`` under ``saliency/``, or holds pickled objects.
        """
        rel = checked_artifact(self.run_id, file, SALIENCY_DIR, ".npy")
        try:
            return np.load(download(self.run_id, rel, self.workdir), allow_pickle=False)
        except ValueError as exc:
            raise MedattnError(f"saliency map {rel!r} of run {self.run_id!r} is not a plain array ({exc}).") from None

    def load_input(self, file: str) -> np.ndarray:
        """The (H, W, 3) uint8 input at artifact path ``file`` (the index's ``input`` column; only under ``inputs/``)."""
        rel = checked_artifact(self.run_id, file, INPUTS_DIR, ".png")
        try:
            with open_image(download(self.run_id, rel, self.workdir)) as im:
                return np.asarray(im.convert("RGB"))
        except ImageReadError as exc:
            raise MedattnError(str(exc)) from None


def read_csv(run_id: str, artifact: str, workdir: Path) -> pd.DataFrame:
    """A CSV artifact of a run (``id`` column as strings)."""
    return pd.read_csv(download(run_id, artifact, workdir), dtype={"id": str})
