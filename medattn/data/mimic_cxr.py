"""MIMIC-CXR: pleural effusion on AP chest radiographs.

Two layouts are read, whichever is present:

(a) MIMIC-CXR-JPG 2.0.0: ``mimic-cxr-2.0.0-{chexpert,metadata,split}.csv`` (or ``.csv.gz``) and
    ``files/p1X/p<subject_id>/s<study_id>/<dicom_id>.jpg``. Only ``ViewPosition == "AP"`` is kept;
    the label is the CheXpert ``Pleural Effusion`` column: 1.0 → 1, 0.0 → 0, blank → image left
    out, uncertain (-1.0) → left out (``uncertain="ignore"``) or mapped to 0/1 (``zeros``/``ones``).
    The split is the official ``split`` column (patient-level), ``validate`` → ``val``.
(b) the original project's folders ``Train_images_AP_resized/``, ``Val_images_AP_resized/`` and
    ``Test_images_AP_resized/``, each with ``Annotations.pickle``: an ``(N, 2)`` array of
    ``[path relative to that folder without .jpg, label]``. The split is the folder.

Sex and age are not in MIMIC-CXR: they are in MIMIC-IV's ``hosp/patients.csv.gz`` (``subject_id``,
``gender`` F/M, ``anchor_age``: the age in the patient's anchor year, de-identified, 91 for
everyone older), which :func:`read_patients` turns into per-patient ``sex`` and ``age``.

Both layouts fix the split, so a patient found in two splits (possible in a hand-made layout) stops
loading; under the default duplicates policy a near-duplicate group that crosses the splits moves,
with its patients, into the split holding most of it (:mod:`medattn.data.duplicates`).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np

from medattn import lazy
from medattn.data.base import DATASETS, DatasetSpec, ReadOptions, Table, parse_int_labels, read_csv, require_dir
from medattn.data.ids import id_problems
from medattn.errors import DataError

pd = lazy.module("pandas")  # loads on first use: listing the data sets (--help) needs no pandas

LABEL = "Pleural Effusion"
CLASS_NAMES = ("no pleural effusion", "pleural effusion")
FOLDERS = {"Train_images_AP_resized": "train", "Val_images_AP_resized": "val", "Test_images_AP_resized": "test"}
OFFICIAL_SPLITS = {"train": "train", "validate": "val", "test": "test"}
_UNCERTAIN_TO = {"zeros": 0, "ones": 1}
_PATIENT = re.compile(r"^p(\d{6,})$")


def _csv(data_dir: Path, stem: str) -> Path:
    plain = data_dir / f"mimic-cxr-2.0.0-{stem}.csv"
    gz = plain.with_name(plain.name + ".gz")
    return gz if gz.is_file() and not plain.is_file() else plain


def _image_path(data_dir: Path, subject: str, study: str, dicom: str) -> Path:
    return data_dir / "files" / f"p{subject}"[:3] / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"


def _read_jpg_layout(data_dir: Path, opts: ReadOptions) -> Table:
    ids = {"subject_id": str, "study_id": str, "dicom_id": str}
    meta_csv, split_csv, chex_csv = _csv(data_dir, "metadata"), _csv(data_dir, "split"), _csv(data_dir, "chexpert")
    meta = read_csv(meta_csv, ["dicom_id", "subject_id", "study_id", "ViewPosition"], dtype=ids)
    splits = read_csv(split_csv, ["dicom_id", "split"], dtype=ids)
    chex = read_csv(chex_csv, ["subject_id", "study_id", LABEL], dtype=ids)
    notes: list[str] = []
    problems: list[str] = []

    ap = meta["ViewPosition"].astype(str).str.upper() == "AP"
    n_all = len(meta)
    meta = meta[ap]
    df = meta.merge(splits[["dicom_id", "split"]].drop_duplicates("dicom_id"), on="dicom_id", how="left")
    df = df.merge(
        chex[["subject_id", "study_id", LABEL]].drop_duplicates(["subject_id", "study_id"]),
        on=["subject_id", "study_id"],
        how="left",
    )

    value = pd.to_numeric(df[LABEL], errors="coerce")
    blank = df[LABEL].isna().to_numpy()
    uncertain = (value == -1).to_numpy()
    _, certain_ok = parse_int_labels(df[LABEL], (0, 1))
    bad = ~(blank | uncertain | certain_ok)
    problems += [
        f"{chex_csv}: {LABEL} {v!r} of study s{st} is outside the task (expected 1.0, 0.0, -1.0 or blank); fix the row."
        for st, v in zip(df["study_id"][bad], df[LABEL][bad], strict=True)
    ]
    label = np.where(certain_ok, value.fillna(-1).to_numpy(), -1).astype(np.int64)
    if opts.uncertain in _UNCERTAIN_TO:
        label[uncertain] = _UNCERTAIN_TO[opts.uncertain]
        use = certain_ok | uncertain
    else:
        use = certain_ok.copy()

    split = df["split"].map(OFFICIAL_SPLITS)
    no_split = split.isna().to_numpy() & use
    problems += [
        f"{split_csv}: image {d} has split {s!r}, not train/validate/test; fix its row."
        for d, s in zip(df["dicom_id"][no_split], df["split"][no_split], strict=True)
    ]
    use &= ~no_split
    safe = np.ones(len(df), dtype=bool)
    for column, source in (("subject_id", meta_csv), ("study_id", meta_csv), ("dicom_id", meta_csv)):
        bad_ids, ok_ids = id_problems(source, column, df[column].astype(str))
        problems += bad_ids
        safe &= np.asarray(ok_ids, dtype=bool)
    use &= safe
    paths = [
        _image_path(data_dir, s, st, d) if ok else data_dir
        for s, st, d, ok in zip(df["subject_id"], df["study_id"], df["dicom_id"], safe, strict=True)
    ]
    exists = np.array([u and p.is_file() for u, p in zip(use, paths, strict=True)], dtype=bool)
    problems += [
        f"image file {p} listed in {meta_csv} does not exist; restore it or remove its row."
        for p, u, e in zip(paths, use, exists, strict=True)
        if u and not e
    ]
    use &= exists

    dropped_uncertain = int(uncertain.sum()) if opts.uncertain == "ignore" else 0
    notes.append(
        f"kept {int(use.sum())} of {n_all} images: {n_all - len(meta)} not AP views, "
        f"{int(blank.sum())} with a blank and {dropped_uncertain} with an uncertain {LABEL} label left out "
        f"(uncertain policy: {opts.uncertain})."
    )
    frame = pd.DataFrame(
        {
            "image_id": df["dicom_id"].astype(str),
            "path": [str(p.resolve()) for p in paths],
            "label": label,
            "patient_id": df["subject_id"].astype(str),
            "split": split.fillna("").astype(str),
        }
    )[use]
    return Table(frame=frame, num_classes=2, class_names=CLASS_NAMES, problems=problems, notes=notes)


# What unpickling a numpy array of strings or numbers needs (numpy 1.x wrote ``numpy.core``, 2.x
# ``numpy._core``; protocol 2 adds ``_codecs.encode`` for the raw bytes). Nothing else is looked up.
_ARRAY_GLOBALS = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
    **{
        (f"numpy.{core}.{module}", name): (f"numpy._core.{module}", name)
        for core in ("core", "_core")
        for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
    },
}


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays of strings and numbers, and nothing else.

    ``pickle.load`` runs whatever callable a file names, so an ``Annotations.pickle`` from a
    colleague or the internet could run any code. This unpickler resolves only the globals in
    :data:`_ARRAY_GLOBALS` (Python's documented way to restrict unpickling, ``find_class``); any
    other global raises :class:`pickle.UnpicklingError` before it is imported or called.
    """

    def find_class(self, module: str, name: str):  # noqa: D102
        target = _ARRAY_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a numpy array of strings or numbers never needs"
            )
        return super().find_class(*target)


def _load_annotations(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(
            f"annotation file {path} does not exist; each *_images_AP_resized folder needs its Annotations.pickle."
        )
    try:
        with path.open("rb") as fh:
            loaded = ArrayUnpickler(fh).load()
        arr = np.asarray(loaded, dtype=object)
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{path} is refused: {exc}, so reading it could run code; re-create it as an (N, 2) array of "
            "[path, label] strings."
        ) from None
    except (OSError, EOFError, ValueError, AttributeError, ImportError, TypeError, IndexError, KeyError) as exc:
        raise DataError(f"cannot read {path} ({exc}); re-create the Annotations.pickle file.") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise DataError(f"{path} holds an array of shape {arr.shape}, not (N, 2) [path, label]; re-create it.")
    return arr


def _patient_of(rel: str) -> str:
    """``p<subject_id>`` component of a MIMIC path, else the image itself is its own patient."""
    for part in Path(rel).parts:
        m = _PATIENT.match(part)
        if m:
            return m.group(1)
    return rel


def _read_folder_layout(data_dir: Path, opts: ReadOptions) -> Table:
    frames, problems = [], []
    for name, split in FOLDERS.items():
        folder = data_dir / name
        if not folder.is_dir():
            raise DataError(
                f"folder {folder} does not exist; the original project's layout needs all of {', '.join(FOLDERS)}."
            )
        ann = folder / "Annotations.pickle"
        arr = _load_annotations(ann)
        rel = pd.Series(arr[:, 0], dtype=str)
        raw = pd.Series(arr[:, 1], dtype=object)
        bad_ids, safe = id_problems(ann, "image path", rel, relative_path=True)
        problems += bad_ids
        rel, raw = rel[safe].reset_index(drop=True), raw[safe].reset_index(drop=True)
        labels, ok = parse_int_labels(raw, (0, 1))
        problems += [
            f"{ann}: label {v!r} of image {r} is outside the task (expected 0 or 1); fix the annotation."
            for r, v in zip(rel[~ok], raw[~ok], strict=True)
        ]
        paths = [folder / f"{r}.jpg" for r in rel]
        exists = np.array([p.is_file() for p in paths], dtype=bool)
        problems += [
            f"image file {p} listed in {ann} does not exist; restore it or remove its entry."
            for p, e in zip(paths, exists, strict=True)
            if not e
        ]
        frame = pd.DataFrame(
            {
                "image_id": rel,
                "path": [str(p.resolve()) for p in paths],
                "label": labels,
                "patient_id": [_patient_of(r) for r in rel],
                "split": split,
            }
        )[ok & exists]
        frames.append(frame)
    return Table(
        frame=pd.concat(frames, ignore_index=True),
        num_classes=2,
        class_names=CLASS_NAMES,
        problems=problems,
        ids_are_paths=True,
    )


_SEX = {"f": "female", "m": "male"}


def read_patients(path: Path | str) -> pd.DataFrame:
    """MIMIC-IV's ``patients.csv.gz`` as ``patient_id, sex, age`` (``sex`` female/male, ``age`` = ``anchor_age``).

    Raises:
        DataError: the file is missing, unreadable or lacks ``subject_id``, ``gender`` or ``anchor_age``.
    """
    raw = read_csv(Path(path), ["subject_id", "gender", "anchor_age"], dtype={"subject_id": str})
    sex = raw["gender"].astype(str).str.strip().str.lower().map(lambda g: _SEX.get(g, g))
    return pd.DataFrame(
        {
            "patient_id": raw["subject_id"].astype(str),
            "sex": sex.where(raw["gender"].notna()),
            "age": pd.to_numeric(raw["anchor_age"], errors="coerce"),
        }
    ).drop_duplicates("patient_id")


def read_mimic_cxr(data_dir: Path, opts: ReadOptions) -> Table:
    """Read whichever MIMIC-CXR layout ``data_dir`` holds (see the module docstring)."""
    require_dir(data_dir, "MIMIC-CXR data")
    if any((data_dir / name).is_dir() for name in FOLDERS):
        if opts.uncertain != "ignore":
            raise DataError(
                f"{data_dir} holds the original project's *_images_AP_resized folders, whose labels are already "
                "binary; drop --uncertain."
            )
        return _read_folder_layout(data_dir, opts)
    if any(_csv(data_dir, stem).is_file() for stem in ("metadata", "split", "chexpert")):
        return _read_jpg_layout(data_dir, opts)
    raise DataError(
        f"{data_dir} holds neither MIMIC-CXR-JPG (mimic-cxr-2.0.0-metadata.csv, files/) nor the "
        f"{', '.join(FOLDERS)} folders; point --data-dir at one of them."
    )


DATASETS.add(
    "mimic-cxr",
    DatasetSpec(
        name="mimic-cxr",
        read=read_mimic_cxr,
        split=None,
        description="MIMIC-CXR AP chest radiographs, pleural effusion",
        supports_uncertain=True,
    ),
    "MIMICCXR",
)
