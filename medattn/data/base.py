"""Data set registry, the :class:`DataIndex` every stage reads, and :func:`load_index`.

A data set is a :class:`DatasetSpec` registered in :data:`DATASETS`: a ``read`` function that turns
the on-disk layout into a :class:`Table` (one row per image, labels already mapped to the task)
and a ``split`` function that assigns train/val/test. Readers never drop an image silently: rows
they cannot use become ``Table.problems`` (``load_index`` raises on them, ``check_data`` lists them
all) and rows they leave out by design (non-AP views, uncertain labels) are counted in
``Table.notes``. :func:`read_table` then finds near-duplicate images and applies the duplicates
policy (:mod:`medattn.data.duplicates`) before the splits are drawn.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medattn import lazy
from medattn.config import SPLITS as CONFIG_SPLITS
from medattn.config import SUBGROUP_ATTRIBUTES, split_name
from medattn.data.duplicates import (
    MAX_DISTANCE,
    check_policy,
    drop_keep_mask,
    empty_groups,
    find_groups,
    group_table,
    keep_units_in_one_split,
    split_units,
    with_final_split,
)
from medattn.data.ids import id_problems
from medattn.data.splits import GROUP_COLUMN, patient_leak_problems
from medattn.errors import ConfigError, DataError
from medattn.registry import Registry

pd = lazy.module("pandas")  # loads on first use: listing the data sets (--help) needs no pandas

SPLITS: tuple[str, ...] = CONFIG_SPLITS
UNCERTAIN_POLICIES: tuple[str, ...] = ("ignore", "zeros", "ones")
FRAME_COLUMNS: tuple[str, ...] = ("image_id", "path", "label", "patient_id", "split")
#: Per-image metadata a reader may add to its frame (subgroup analysis of ``medattn test --subgroups``):
#: ``sex`` (``female``/``male``), ``age`` (years, a number) and ``site`` (free text, e.g. a body site
#: or an acquisition site). A value the data lack is missing (NaN).
METADATA_COLUMNS: tuple[str, ...] = SUBGROUP_ATTRIBUTES


def metadata_of(raw: pd.DataFrame, columns: dict[str, str] | None = None) -> dict[str, pd.Series]:
    """The :data:`METADATA_COLUMNS` a label table carries, renamed and cleaned.

    Args:
        raw: the data set's label table, one row per image.
        columns: ``{metadata name: column in raw}`` (e.g. ``{"age": "age_approx"}``); a metadata
            name not given is looked up under its own name. Absent columns are left out.

    Returns:
        ``{name: values}`` aligned with ``raw``: ``sex`` lower case, ``age`` numeric, ``site`` as text.
    """
    columns = {name: name for name in METADATA_COLUMNS} | (columns or {})
    out: dict[str, pd.Series] = {}
    for name, column in columns.items():
        if column not in raw.columns:
            continue
        values = raw[column]
        if name == "age":
            out[name] = pd.to_numeric(values, errors="coerce")
        else:
            out[name] = values.where(values.isna(), values.astype(str).str.strip().str.lower())
    return out


@dataclass(frozen=True)
class ReadOptions:
    """Task options a reader needs (validated by :func:`load_index`).

    Attributes:
        multiclass: APTOS only: keep the 5 DR grades instead of ``diagnosis > 0``.
        uncertain: MIMIC-CXR only: what an uncertain (-1) label becomes: ``ignore`` (drop the
            image), ``zeros`` or ``ones``.
    """

    multiclass: bool = False
    uncertain: str = "ignore"


@dataclass
class Table:
    """What a reader returns.

    Attributes:
        frame: one row per usable image: ``image_id``, ``path`` (absolute), ``label`` (int),
            ``patient_id`` and optionally ``split`` (when the layout fixes it) and ``mask_path``.
        num_classes: number of classes of the task.
        class_names: one name per class.
        problems: one sentence per unusable row or file (the row is left out of ``frame``).
        notes: one sentence per group of rows left out by design (e.g. non-AP views).
        duplicate_groups: one row per image in a near-duplicate group (filled by
            :func:`read_table`; columns :data:`medattn.data.duplicates.GROUP_COLUMNS`).
        ids_are_paths: the layout defines image ids as ``/``-separated relative paths (the
            original MIMIC folders), so ``/`` is allowed in them (:mod:`medattn.data.ids`).
    """

    frame: pd.DataFrame
    num_classes: int
    class_names: tuple[str, ...]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duplicate_groups: pd.DataFrame = field(default_factory=empty_groups)
    ids_are_paths: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set.

    Attributes:
        name: canonical name.
        read: ``read(data_dir, options) -> Table``.
        split: ``split(frame, seed) -> np.ndarray`` of split names, one per row; ``None`` when the
            reader fills the ``split`` column from the layout itself.
        description: one line for ``--help`` texts and error messages.
        has_patients: whether ``patient_id`` identifies real patients (leakage checks matter).
        supports_multiclass: whether ``multiclass=True`` is meaningful.
        supports_uncertain: whether the ``uncertain`` policy is meaningful.
    """

    name: str
    read: Callable[[Path, ReadOptions], Table]
    split: Callable[[pd.DataFrame, int], np.ndarray] | None
    description: str
    has_patients: bool = True
    supports_multiclass: bool = False
    supports_uncertain: bool = False


DATASETS: Registry[DatasetSpec] = Registry.for_kind("dataset")


@dataclass(frozen=True)
class DataIndex:
    """Every image of a data set with its label, patient and split.

    Attributes:
        dataset: canonical data set name.
        data_dir: the folder it was read from.
        frame: one row per image with columns ``image_id`` (str, unique), ``path`` (str,
            absolute), ``label`` (int), ``patient_id`` (str), ``split`` (``train``/``val``/``test``),
            for ``demo`` ``mask_path`` (str), and the :data:`METADATA_COLUMNS` the data carry
            (ISIC 2020: ``sex``, ``age``, ``site``; a demo set whose ``labels.csv`` has them: those).
        num_classes: number of classes.
        class_names: one name per class.
        notes: rows left out by design (non-AP views, uncertain or blank labels, near-duplicates
            dropped), one sentence each.
        duplicates: the near-duplicate policy the splits were made with (``group``/``drop``/``ignore``).
        duplicate_groups: one row per image in a near-duplicate group: ``group``, ``image_id``,
            ``patient_id``, ``label``, ``split_before`` (without duplicate handling), ``split`` (``""``
            if not in the index), ``kept``, ``conflicting``, ``source``; empty under ``ignore``.
    """

    dataset: str
    data_dir: Path
    frame: pd.DataFrame
    num_classes: int
    class_names: tuple[str, ...]
    notes: tuple[str, ...] = ()
    duplicates: str = "group"
    duplicate_groups: pd.DataFrame = field(default_factory=empty_groups)

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split in their original order.

        Args:
            name: ``train``, ``val`` (or ``validation``) or ``test``, case-insensitive.

        Returns:
            A copy of those rows with a fresh ``RangeIndex``.
        """
        return self.frame[self.frame["split"] == canonical_split(name)].reset_index(drop=True)


def canonical_split(name: str) -> str:
    """Map ``Train``/``Validation``/``val``/``test`` (the seed's spellings too) to a split name.

    The spellings are :data:`medattn.config.SPLIT_ALIASES` (one list for every command).
    """
    return split_name(name)


# --------------------------------------------------------------------------------------------
# Helpers shared by the readers.
# --------------------------------------------------------------------------------------------


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise a :class:`DataError` naming it."""
    if not path.is_dir():
        raise DataError(f"data folder {path} does not exist; pass the folder holding the {what} with --data-dir.")
    return path


def read_csv(path: Path, required: Sequence[str], **kwargs) -> pd.DataFrame:
    """Read a CSV (``.csv`` or ``.csv.gz``) and check that ``required`` columns are present.

    Raises:
        DataError: the file is missing, unreadable, or lacks a required column.
    """
    if not path.is_file():
        raise DataError(f"label file {path} does not exist; check --data-dir and the data set layout.")
    try:
        frame = pd.read_csv(path, **kwargs)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path} as CSV ({exc}); re-download or repair the file.") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} lacks the required column(s) {', '.join(map(repr, missing))} "
            f"(found {', '.join(map(str, frame.columns))}); use the data set's original CSV."
        )
    return frame


def first_existing(base: Path, candidates: Iterable[str]) -> Path | None:
    """The first ``base / c`` that is a folder, or ``None``."""
    for c in candidates:
        if (base / c).is_dir():
            return base / c
    return None


def match_images(folder: Path, ids: Sequence[str], exts: Sequence[str]) -> list[str | None]:
    """Find ``<folder>/<id><ext>`` for each id with one directory listing (fast on 10^5 files).

    Returns:
        Absolute path per id, ``None`` where no file with one of ``exts`` exists.
    """
    try:
        names = set(os.listdir(folder))
    except OSError:
        names = set()
    out: list[str | None] = []
    for i in ids:
        hit = next((f"{i}{e}" for e in exts if f"{i}{e}" in names), None)
        out.append(str((folder / hit).resolve()) if hit else None)
    return out


def locate_images(
    source: Path, column: str, ids: Sequence[str], folder: Path, exts: Sequence[str]
) -> tuple[list[str | None], list[str]]:
    """Find each row's image ``<folder>/<id><ext>``, after checking its id is safe as a file name.

    Args:
        source: the label file the ids come from (named in the problems).
        column: its id column (named in the problems).
        ids: the image ids, one per row.
        folder: the image folder.
        exts: the extensions tried, in order; a missing file is reported with the first.

    Returns:
        ``(paths, problems)``: the absolute path per row (``None`` where the id is refused, see
        :func:`medattn.data.ids.id_problems`, or no file exists; a refused id is never looked up)
        and one sentence per refused id, then one per missing file.
    """
    bad_ids, safe = id_problems(source, column, ids)
    paths = [p if ok else None for p, ok in zip(match_images(folder, list(ids), exts), safe, strict=True)]
    expected = [folder / f"{i}{exts[0]}" for i in ids]
    return paths, bad_ids + missing_problems(source, *checked(ids, paths, expected, safe))


def parse_int_labels(values: pd.Series, allowed: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Parse labels that must be integers in ``allowed``.

    Returns:
        ``(labels, ok)``: int64 labels (``-1`` where invalid) and a bool mask of valid rows.
    """
    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(num) & np.isin(num, np.asarray(allowed, dtype=float))
    labels = np.where(ok, num, -1).astype(np.int64)
    return labels, ok


def label_problems(
    source: Path, column: str, ids: pd.Series, values: pd.Series, ok: np.ndarray, allowed: str
) -> list[str]:
    """One sentence per row whose label is outside the task."""
    return [
        f"{source}: {column} {v!r} of image {i} is outside the task (expected {allowed}); fix the row or remove it."
        for i, v in zip(ids[~ok], values[~ok], strict=True)
    ]


@dataclass(frozen=True)
class ImageRows:
    """The rows of a label table that names one image per row (:func:`image_rows`)."""

    ids: pd.Series  # the image ids, as text
    labels: np.ndarray  # int64 labels, -1 where invalid
    paths: list[str | None]  # the image file of each row, None where refused or missing
    keep: np.ndarray  # rows with a valid label and an image file
    label_problems: list[str]  # one sentence per label outside the task
    image_problems: list[str]  # one per refused id, then one per missing file


def image_rows(
    source: Path,
    raw: pd.DataFrame,
    id_column: str,
    label_column: str,
    folder: Path,
    exts: Sequence[str],
    *,
    allowed: Sequence[int],
    expected: str,
) -> ImageRows:
    """Parse the integer labels of ``raw``'s ``label_column`` (:func:`parse_int_labels`) and find each row's
    image ``<folder>/<id><ext>`` by its ``id_column`` (:func:`locate_images`); ``expected`` names the
    ``allowed`` labels in the problems, ``source`` is the label file they name."""
    labels, ok = parse_int_labels(raw[label_column], allowed)
    bad_labels = label_problems(source, label_column, raw[id_column], raw[label_column], ok, expected)
    ids = raw[id_column].astype(str)
    paths, image_problems = locate_images(source, id_column, ids, folder, exts)
    keep = ok & pd.notna(pd.Series(paths, dtype=object)).to_numpy()
    return ImageRows(ids, labels, paths, keep, bad_labels, image_problems)


def checked(ids, paths, expected, safe) -> tuple[list[str], list, list]:
    """``ids``, ``paths`` and ``expected`` of the rows whose id passed :func:`medattn.data.ids.id_problems`
    (refused ids are already problems of their own, not missing files)."""
    rows = [(i, p, e) for i, p, e, ok in zip(ids, paths, expected, safe, strict=True) if ok]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def missing_problems(
    source: Path, ids: Sequence[str], paths: Sequence[str | None], expected: Sequence[Path]
) -> list[str]:
    """One sentence per image listed in ``source`` whose file does not exist."""
    return [
        f"image file {exp} listed in {source} does not exist; restore it or remove its row."
        for i, p, exp in zip(ids, paths, expected, strict=True)
        if p is None
    ]


# --------------------------------------------------------------------------------------------
# Loading.
# --------------------------------------------------------------------------------------------


def _options(spec: DatasetSpec, multiclass: bool, uncertain: str) -> ReadOptions:
    if multiclass and not spec.supports_multiclass:
        raise ConfigError(f"multiclass labels are only defined for aptos2019, not {spec.name}; drop --multiclass.")
    policy = str(uncertain).lower()
    if policy not in UNCERTAIN_POLICIES:
        raise ConfigError(
            f"unknown uncertain-label policy {uncertain!r}; choose one of {', '.join(UNCERTAIN_POLICIES)}."
        )
    if policy != "ignore" and not spec.supports_uncertain:
        raise ConfigError(f"uncertain labels exist only in mimic-cxr, not {spec.name}; drop --uncertain.")
    return ReadOptions(multiclass=multiclass, uncertain=policy)


def _split_of_layout(spec: DatasetSpec, frame: pd.DataFrame, seed: int, units: np.ndarray | None = None) -> np.ndarray:
    """The split per row: the layout's own (``spec.split is None``) or the seeded splitter's.

    ``units`` (str per row) makes the seeded splitter keep each unit whole (patients joined with
    near-duplicate groups); ``None`` splits by patient / image as the data set defines.
    """
    if spec.split is None:
        return frame["split"].astype(str).to_numpy(dtype=object)
    if not len(frame):
        return np.empty(0, dtype=object)
    return np.asarray(spec.split(frame if units is None else frame.assign(**{GROUP_COLUMN: units}), seed), dtype=object)


def _apply_duplicates(spec: DatasetSpec, table: Table, root: Path, policy: str, seed: int, max_distance: float) -> None:
    """Find near-duplicate groups, apply ``policy`` and set ``table.frame["split"]`` (in place)."""
    frame = table.frame
    split_before = _split_of_layout(spec, frame, seed)
    if spec.has_patients:
        # A layout that puts one patient in two splits leaks that patient into the test split: a problem,
        # reported before any near-duplicate move.
        table.problems += patient_leak_problems(frame.assign(split=split_before))
    if policy == "ignore" or not len(frame):
        frame["split"] = split_before
        return
    group, source, notes = find_groups(frame, root, spec.name, max_distance=max_distance)
    table.notes += notes
    kept = np.ones(len(frame), dtype=bool)
    if not (group > 0).any():
        frame["split"] = split_before
    elif policy == "drop":
        kept, drop_notes = drop_keep_mask(group, frame["label"].to_numpy())
        table.notes += drop_notes
        frame.loc[kept, "split"] = _split_of_layout(spec, frame[kept], seed)
    else:
        units = split_units(frame["patient_id"].to_numpy(dtype=str), group)
        if spec.split is None:
            split, move_notes = keep_units_in_one_split(split_before, units, SPLITS)
            table.notes += move_notes
        else:
            split = _split_of_layout(spec, frame, seed, units)
        frame["split"] = split
    table.duplicate_groups = group_table(frame.fillna({"split": ""}), group, source, split_before, kept)
    table.frame = frame[kept].reset_index(drop=True)


def read_table(
    dataset: str,
    data_dir: Path | str,
    *,
    multiclass: bool = False,
    uncertain: str = "ignore",
    split_seed: int = 42,
    duplicates: str = "group",
    max_distance: float = MAX_DISTANCE,
) -> tuple[DatasetSpec, Table]:
    """Read a data folder, handle near-duplicates and assign splits, collecting problems instead of raising.

    Structural errors (unknown data set, missing folder, CSV without required columns) still
    raise, because nothing can be read past them. A patient in two splits of a layout that fixes
    the split is a problem (``load_index`` raises on it).

    Args:
        dataset: data set name (aliases accepted).
        data_dir: the data folder.
        multiclass: APTOS only: 5 DR grades.
        uncertain: MIMIC-CXR only: uncertain-label policy.
        split_seed: seed of the computed splits.
        duplicates: ``group`` | ``drop`` | ``ignore`` (see :mod:`medattn.data.duplicates`).
        max_distance: largest fingerprint distance of a near-duplicate pair.
    """
    spec = DATASETS.get(dataset)
    opts = _options(spec, multiclass, uncertain)
    policy = check_policy(duplicates)
    root = Path(data_dir).expanduser().resolve()
    table = spec.read(root, opts)
    frame = table.frame.reset_index(drop=True)
    for column in ("image_id", "path", "patient_id"):
        frame[column] = frame[column].astype(str)
    frame["label"] = frame["label"].astype(np.int64)
    bad_ids, safe = id_problems(root, "image id", frame["image_id"], relative_path=table.ids_are_paths)
    table.problems.extend(bad_ids)
    frame = frame[np.asarray(safe, dtype=bool)].reset_index(drop=True)
    dup = frame["image_id"][frame["image_id"].duplicated()]
    table.problems.extend(
        f"image id {i!r} appears more than once in {data_dir}; make image ids unique." for i in dup.unique()
    )
    table.frame = frame
    _apply_duplicates(spec, table, root, policy, split_seed, max_distance)
    frame = table.frame
    frame["split"] = frame["split"].astype(str)
    table.frame = frame[[*FRAME_COLUMNS, *(c for c in frame.columns if c not in FRAME_COLUMNS)]]
    return spec, table


def duplicate_units(frame: pd.DataFrame, groups: pd.DataFrame) -> np.ndarray:
    """Per row of ``frame``: its near-duplicate group (``dup:<n>``) or, outside groups, its image id."""
    group_of = dict(zip(groups["image_id"].astype(str), groups["group"], strict=True)) if len(groups) else {}
    return np.array([f"dup:{group_of[i]}" if i in group_of else i for i in frame["image_id"].astype(str)], dtype=object)


def low_data_subsample(
    frame: pd.DataFrame, perc_train: float, seed: int = 42, units: np.ndarray | None = None
) -> pd.DataFrame:
    """Keep a stratified ``perc_train`` fraction of the train rows; val/test rows untouched.

    Args:
        frame: the full index frame with a ``split`` column.
        perc_train: fraction of the training images to keep, in (0, 1].
        seed: random seed of the subsample.
        units: optional label per row (e.g. :func:`duplicate_units`); rows sharing one are kept or
            dropped together, and the fraction counts units. Without shared labels the subsample is
            the per-image one.

    Returns:
        The frame without the dropped train rows, original order kept.
    """
    if not 0.0 < perc_train <= 1.0:
        raise ConfigError(f"--perc-train {perc_train} is outside (0, 1]; pass a fraction such as 0.25.")
    train_idx = frame.index[frame["split"] == "train"].to_numpy()
    if units is not None:
        unit = pd.Series(np.asarray(units, dtype=str), index=frame.index).loc[train_idx]
        first = ~unit.duplicated().to_numpy()
        if not first.all():
            kept = low_data_subsample(frame.loc[train_idx[first]], perc_train, seed)
            keep_units = set(unit.loc[kept.index])
            return frame.drop(index=train_idx[~unit.isin(keep_units).to_numpy()])
    n_keep = int(np.floor(perc_train * len(train_idx)))
    if n_keep == 0:
        raise DataError(
            f"--perc-train {perc_train} leaves the train split empty ({len(train_idx)} training images); "
            "pass a larger --perc-train."
        )
    if perc_train == 1.0:
        return frame
    labels = frame.loc[train_idx, "label"].to_numpy()
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    # train_test_split refuses to stratify when a class has one image or a side is smaller than
    # the number of classes; then a plain random subsample is the only honest option.
    can_stratify = counts.min() >= 2 and n_keep >= len(counts) and len(train_idx) - n_keep >= len(counts)
    # scikit-learn loads on first use: the command line reads the data set names without it (~1 s)
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(
        train_idx, train_size=n_keep, stratify=labels if can_stratify else None, random_state=seed
    )
    drop = np.setdiff1d(train_idx, keep)
    return frame.drop(index=drop)


def load_index(
    dataset: str,
    data_dir: Path | str,
    *,
    multiclass: bool = False,
    uncertain: str = "ignore",
    low_data_regimen: bool = False,
    perc_train: float = 1.0,
    split_seed: int = 42,
    duplicates: str = "group",
    max_distance: float = MAX_DISTANCE,
) -> DataIndex:
    """Read a data folder in its on-disk layout, with labels and the train/val/test split.

    Args:
        dataset: ``aptos2019``, ``isic2020``, ``mimic-cxr`` or ``demo`` (aliases accepted).
        data_dir: folder holding the data set.
        multiclass: APTOS only: 5 DR grades instead of referable DR.
        uncertain: MIMIC-CXR only: ``ignore`` | ``zeros`` | ``ones`` for uncertain labels.
        low_data_regimen: keep only a stratified ``perc_train`` fraction of the train split.
        perc_train: fraction of training images kept in the low-data regimen, in (0, 1].
        split_seed: seed of the computed splits and of the low-data subsample.
        duplicates: near-duplicate policy: ``group`` (keep each group in one split, joined with
            its patients), ``drop`` (one image per group; conflicting-label groups dropped whole)
            or ``ignore`` (see :mod:`medattn.data.duplicates`). The low-data regimen keeps or drops
            whole groups.
        max_distance: largest fingerprint distance of a near-duplicate pair.

    Returns:
        The :class:`DataIndex`.

    Raises:
        DataError: a missing folder/file/column, a label outside the task, a patient in two
            splits, or an empty split.
        ConfigError: an unknown data set name or option value.
    """
    if low_data_regimen and not 0.0 < perc_train <= 1.0:
        raise ConfigError(f"--perc-train {perc_train} is outside (0, 1]; pass a fraction such as 0.25.")
    spec, table = read_table(
        dataset,
        data_dir,
        multiclass=multiclass,
        uncertain=uncertain,
        split_seed=split_seed,
        duplicates=duplicates,
        max_distance=max_distance,
    )
    if table.problems:
        more = len(table.problems) - 1
        tail = (
            f" (and {more} more problem{'s' if more > 1 else ''}; `medattn data check --dataset {spec.name} "
            f"--data-dir {data_dir}` lists them all)"
            if more
            else ""
        )
        raise DataError(table.problems[0].rstrip(".") + tail + ".")
    frame, groups = table.frame, table.duplicate_groups
    if low_data_regimen:
        frame = low_data_subsample(frame, perc_train, seed=split_seed, units=duplicate_units(frame, groups))
        groups = with_final_split(groups, frame)
    counts = frame["split"].value_counts()
    for name in SPLITS:
        if counts.get(name, 0) == 0:
            hint = (
                "pass a larger --perc-train" if low_data_regimen and name == "train" else "add images to the data set"
            )
            raise DataError(
                f"the {name} split of {spec.name} in {data_dir} is empty ({len(frame)} images in all); {hint}."
            )
    return DataIndex(
        dataset=spec.name,
        data_dir=Path(data_dir).expanduser().resolve(),
        frame=frame.reset_index(drop=True),
        num_classes=table.num_classes,
        class_names=table.class_names,
        notes=tuple(table.notes),
        duplicates=check_policy(duplicates),
        duplicate_groups=groups,
    )
