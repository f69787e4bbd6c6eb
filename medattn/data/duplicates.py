"""Near-duplicate images: fingerprints, groups, and what the splits do with them.

Public medical image sets hold the same picture more than once (re-exported, re-encoded, re-cropped);
Cassidy et al., *Analysis of the ISIC image datasets*, Medical Image Analysis 75 (2022) found such
duplicates across ISIC's training and test sets. A near-duplicate in train and test inflates every
test metric, so the splits keep each group of near-duplicates together (like a patient).

**Fingerprint.** The image is turned grey (ITU-R 601 luma, as PIL's ``"L"``), averaged down to a
32×32 thumbnail (area average), transformed with the 2-D DCT-II, and the :data:`FINGERPRINT_SIZE`
= 64 lowest-frequency AC coefficients (zig-zag order; the DC term is left out, so overall brightness
does not count) are scaled to unit length. This is pHash (Zauner, 2010) kept as real numbers instead
of the signs against the median: near-zero coefficients flip sign under a 2 % crop, so a Hamming
distance cannot tell a cropped copy from a different image, while the Euclidean distance can.

**Distance.** Euclidean distance between fingerprints (``sqrt(2 - 2 cos)``, 0 to 2). Two images are
near-duplicates when it is at most :data:`MAX_DISTANCE` = 0.15. Measured on synthetic pictures
(200 smooth random scenes and 200 of the demo's fundus images, 256 px): re-encoding at JPEG quality
50 or halving the size moves a fingerprint by ≤ 0.02; cropping 1 % off every side by ≤ 0.08,
1.5 % off every side (3 % of each dimension) by ≤ 0.12, 2 % by ≤ 0.17. Distinct images lay ≥ 0.22
apart even when drawn from one template (600 demo images at 128 px), ≥ 0.85 otherwise. Larger crops
are out of reach of any global fingerprint that also keeps look-alike fundus photographs apart.

**Search.** Not quadratic: a kd-tree range query (:class:`scipy.spatial.cKDTree`) on the first
:data:`_SEARCH_DIMS` principal components finds candidate pairs. Projecting onto orthonormal axes
never increases a distance, so no pair within the threshold is missed; each candidate is then
checked on the full fingerprint. Pairs are joined transitively (connected components of the pair
graph), together with the pairs of a release's own duplicate list (e.g. ISIC 2020's
``ISIC_2020_Training_Duplicates.csv``), read from any ``*uplicate*.csv`` in the data folder.

**Storage.** Fingerprints are computed once per image and stored in
``<data_dir>/.medattn_cache/<dataset>-fingerprints.npz``, keyed by image id, path, file size and
modification time; they are read from the uint8 cache (``medattn data prepare``) when one covers
the image, else from the file (JPEG decoded at reduced scale).

**Policies.** ``group`` (default): each group, joined with the patients of its images, lands in
one split. ``drop``: keep the first image of each group; a group whose labels conflict is dropped
whole. ``ignore``: no fingerprints, splits as before.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from medattn import lazy
from medattn.config import DUPLICATES
from medattn.data.io import DECODE_ERRORS, ImageReadError, open_image
from medattn.data.transforms import to_rgb
from medattn.errors import ConfigError, DataError

pd = lazy.module("pandas")  # loads on first use: listing the data sets (--help) needs no pandas

POLICIES: tuple[str, ...] = DUPLICATES  # one list for the config check and the data layer
FINGERPRINT_SIZE = 64
MAX_DISTANCE = 0.15
THUMBNAIL = 32
# The folder and file names of medattn.data.cache, spelled out here because that module imports
# base.load_index, which imports this one.
CACHE_DIRNAME = ".medattn_cache"
_CACHE_FILES = ("images.npy", "manifest.csv")
GROUP_COLUMNS: tuple[str, ...] = (
    "group",
    "image_id",
    "patient_id",
    "label",
    "split_before",
    "split",
    "kept",
    "conflicting",
    "source",
)
_SEARCH_DIMS = 12
_CHUNK = 128
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _zigzag(side: int, count: int) -> np.ndarray:
    """Flat indices of the ``count`` lowest-frequency AC coefficients of a ``side × side`` DCT."""
    u, v = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    order = np.lexsort((u.ravel(), (u + v).ravel()))
    return order[1 : count + 1]


_ZIGZAG = _zigzag(THUMBNAIL, FINGERPRINT_SIZE)


def check_policy(policy: str) -> str:
    """The canonical duplicates policy, or a :class:`ConfigError` naming the choices."""
    key = str(policy).strip().lower()
    if key not in POLICIES:
        raise ConfigError(f"unknown duplicates policy {policy!r}; choose one of {', '.join(POLICIES)}.")
    return key


def empty_groups() -> pd.DataFrame:
    """A groups table with no rows (the ``ignore`` policy, or no duplicates found)."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in GROUP_COLUMNS})


# --------------------------------------------------------------------------------------------
# Fingerprints.
# --------------------------------------------------------------------------------------------


def fingerprints_from_thumbnails(thumbs: np.ndarray) -> np.ndarray:
    """Fingerprints of grey thumbnails.

    Args:
        thumbs: float array ``(N, 32, 32)``.

    Returns:
        float32 ``(N, 64)``, each row of unit length (all-zero rows for flat images).
    """
    # scipy loads on first use: the command line reads the data set names without it
    from scipy.fft import dctn

    coeffs = dctn(np.asarray(thumbs, dtype=np.float32), type=2, norm="ortho", axes=(1, 2))
    flat = coeffs.reshape(len(coeffs), -1)[:, _ZIGZAG]
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return (flat / np.where(norm > 1e-6, norm, 1.0)).astype(np.float32)


def thumbnails_from_array(images: np.ndarray) -> np.ndarray:
    """Grey 32×32 thumbnails of uint8 images ``(N, H, W, 3)`` (area average), float32 ``(N, 32, 32)``."""
    grey = np.asarray(images, dtype=np.float32) @ _LUMA
    n, h, w = grey.shape
    if h % THUMBNAIL == 0 and w % THUMBNAIL == 0:
        return grey.reshape(n, THUMBNAIL, h // THUMBNAIL, THUMBNAIL, w // THUMBNAIL).mean(axis=(2, 4))
    return np.stack([np.asarray(Image.fromarray(g, mode="F").resize((THUMBNAIL, THUMBNAIL), Image.BOX)) for g in grey])


def thumbnail_from_file(path: str | Path) -> np.ndarray | None:
    """Grey 32×32 thumbnail of an image file, float32 ``(32, 32)``; ``None`` if it cannot be decoded.

    JPEGs are decoded at reduced scale (``Image.draft``), which makes a 6000×4000 photograph cost
    about as much as a 750×500 one. Undecodable files and files above the pixel budget
    (:func:`medattn.data.io.open_image`) are left to ``data check`` / the loader, which name them.
    """
    try:
        with open_image(path) as im:
            im.draft(None, (2 * THUMBNAIL, 2 * THUMBNAIL))
            grey = to_rgb(im).convert("L")
            return np.asarray(grey.resize((THUMBNAIL, THUMBNAIL), Image.BOX), dtype=np.float32)
    except (*DECODE_ERRORS, ImageReadError):
        return None


def fingerprint_store(data_dir: Path | str, dataset: str) -> Path:
    """Where the fingerprints of ``dataset`` in ``data_dir`` are stored."""
    return Path(data_dir) / CACHE_DIRNAME / f"{dataset}-fingerprints.npz"


def _file_keys(paths: Sequence[str]) -> np.ndarray:
    """``(N, 2)`` int64 file size and mtime in ns per path (``-1`` where the file is missing)."""
    out = np.full((len(paths), 2), -1, dtype=np.int64)
    for n, p in enumerate(paths):
        try:
            st = os.stat(p)
        except OSError:
            continue
        out[n] = (st.st_size, st.st_mtime_ns)
    return out


def _load_store(path: Path) -> dict[tuple[str, str, int, int], np.ndarray]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, paths, keys, fps = z["image_id"], z["path"], z["keys"], z["fingerprint"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return {}  # a damaged store is only a lost cache: recompute
    if fps.shape[1:] != (FINGERPRINT_SIZE,):
        return {}
    return {(str(i), str(p), int(k[0]), int(k[1])): f for i, p, k, f in zip(ids, paths, keys, fps, strict=True)}


def _save_store(path: Path, ids: Sequence[str], paths: Sequence[str], keys: np.ndarray, fps: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One temporary file per process: DDP ranks may store at the same time.
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
        np.savez(
            tmp, image_id=np.asarray(ids, dtype=str), path=np.asarray(paths, dtype=str), keys=keys, fingerprint=fps
        )
        os.replace(tmp, path)
    except OSError as exc:
        # A read-only data folder only costs recomputing next time.
        logging.getLogger(__name__).warning(
            "cannot store fingerprints in %s (%s); they are recomputed next time", path, exc
        )


def _cache_folders(data_dir: Path, dataset: str) -> list[Path]:
    """Prepared caches of ``dataset``, smallest image side ≥ 32 px first (least to read)."""
    found = []
    for folder in (data_dir / CACHE_DIRNAME).glob(f"{dataset}-*px"):
        size = folder.name[len(dataset) + 1 : -2]
        if size.isdigit() and all((folder / name).is_file() for name in _CACHE_FILES):
            found.append((int(size) < THUMBNAIL, int(size), folder))
    return [folder for *_, folder in sorted(found)]


def _cached_thumbnails(data_dir: Path, dataset: str, ids: Sequence[str], paths: Sequence[str]) -> dict[int, np.ndarray]:
    """Thumbnails of the images (by position in ``ids``) that a prepared uint8 cache holds."""
    out: dict[int, np.ndarray] = {}
    for folder in _cache_folders(data_dir, dataset):
        array_file, manifest_file = (folder / name for name in _CACHE_FILES)
        manifest = pd.read_csv(manifest_file, dtype=str, keep_default_na=False)
        if not {"image_id", "path"} <= set(manifest.columns):
            continue
        row_of = {(i, p): n for n, (i, p) in enumerate(zip(manifest["image_id"], manifest["path"], strict=True))}
        want = [(k, row_of.get((i, p))) for k, (i, p) in enumerate(zip(ids, paths, strict=True)) if k not in out]
        want = [(k, r) for k, r in want if r is not None]
        if not want:
            continue
        array = np.load(array_file, mmap_mode="r")
        want.sort(key=lambda kr: kr[1])  # read the memory map front to back
        for start in range(0, len(want), _CHUNK):
            part = want[start : start + _CHUNK]
            thumbs = thumbnails_from_array(array[[r for _, r in part]])
            out.update({k: t for (k, _), t in zip(part, thumbs, strict=True)})
    return out


def compute_fingerprints(
    frame: pd.DataFrame, data_dir: Path | str, dataset: str, *, workers: int | None = None
) -> np.ndarray:
    """Fingerprint of every image of ``frame``, computed once and stored beside the uint8 cache.

    Args:
        frame: rows with ``image_id`` and ``path`` (absolute).
        data_dir: the data folder (the store goes to ``<data_dir>/.medattn_cache/``).
        dataset: canonical data set name.
        workers: decoding threads for images the cache does not hold (default: CPU count).

    Returns:
        float32 ``(len(frame), 64)``; rows of images that cannot be decoded are NaN.
    """
    data_dir = Path(data_dir)
    ids, paths = frame["image_id"].astype(str).tolist(), frame["path"].astype(str).tolist()
    keys = _file_keys(paths)
    store_path = fingerprint_store(data_dir, dataset)
    stored = _load_store(store_path)
    fps = np.full((len(ids), FINGERPRINT_SIZE), np.nan, dtype=np.float32)
    todo = []
    for n, (i, p, k) in enumerate(zip(ids, paths, keys, strict=True)):
        hit = stored.get((i, p, int(k[0]), int(k[1])))
        if hit is not None:
            fps[n] = hit
        else:
            todo.append(n)
    if not todo:
        return fps
    cached = _cached_thumbnails(data_dir, dataset, [ids[n] for n in todo], [paths[n] for n in todo])
    from_files = [n for j, n in enumerate(todo) if j not in cached]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        decoded = list(pool.map(thumbnail_from_file, [paths[n] for n in from_files]))
    thumbs = {todo[j]: t for j, t in cached.items()}
    thumbs.update({n: t for n, t in zip(from_files, decoded, strict=True) if t is not None})
    if thumbs:
        rows = sorted(thumbs)
        fps[rows] = fingerprints_from_thumbnails(np.stack([thumbs[n] for n in rows]))
    ok = ~np.isnan(fps).any(axis=1)
    _save_store(
        store_path, [ids[n] for n in np.flatnonzero(ok)], [paths[n] for n in np.flatnonzero(ok)], keys[ok], fps[ok]
    )
    return fps


# --------------------------------------------------------------------------------------------
# Pairs and groups.
# --------------------------------------------------------------------------------------------


def near_duplicate_pairs(fps: np.ndarray, max_distance: float = MAX_DISTANCE) -> np.ndarray:
    """Every pair of fingerprints within ``max_distance``, without comparing all pairs.

    Args:
        fps: float ``(N, D)`` fingerprints; rows with NaN are never paired.
        max_distance: the largest Euclidean distance of a near-duplicate pair.

    Returns:
        int64 ``(M, 2)`` row pairs ``i < j``, sorted.
    """
    valid = np.flatnonzero(~np.isnan(fps).any(axis=1))
    if len(valid) < 2:
        return np.empty((0, 2), dtype=np.int64)
    x = fps[valid].astype(np.float64)
    centred = x - x.mean(axis=0)
    # Orthonormal principal axes: the projection never increases a distance (no pair is missed).
    _, _, vt = np.linalg.svd(centred[:: max(1, len(x) // 20000)], full_matrices=False)
    projected = centred @ vt[: min(_SEARCH_DIMS, vt.shape[0])].T
    # scipy loads on first use: the command line reads the data set names without it
    from scipy.spatial import cKDTree

    cand = cKDTree(projected).query_pairs(r=max_distance, output_type="ndarray").astype(np.int64)
    if len(cand):
        dist = np.linalg.norm(x[cand[:, 0]] - x[cand[:, 1]], axis=1)
        cand = cand[dist <= max_distance]
    pairs = np.sort(valid[cand], axis=1) if len(cand) else np.empty((0, 2), dtype=np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))] if len(pairs) else pairs


def _id_columns(columns: Sequence[str]) -> list[str]:
    """Columns of a duplicate list that hold image ids, found by their header."""
    hints = ("image", "name", "id", "file", "dup")
    return [c for c in columns if any(h in str(c).lower() for h in hints)][:2]


def known_duplicate_pairs(data_dir: Path | str, image_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Pairs listed by a release's own duplicate list(s) (``*uplicate*.csv`` in ``data_dir``).

    The two id columns are found by header (e.g. ISIC 2020's ``image_name_1,image_name_2``); ids
    may carry an image extension. Pairs naming an image outside ``image_ids`` are skipped.

    Returns:
        ``(pairs, notes)``: int64 ``(M, 2)`` row pairs into ``image_ids``, and one sentence per list read.

    Raises:
        DataError: a list without two recognisable id columns.
    """
    row_of = {str(i): n for n, i in enumerate(image_ids)}
    pairs, notes = [], []
    for path in sorted(Path(data_dir).glob("*[Dd]uplicate*.csv")):
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"cannot read the duplicate list {path} ({exc}); repair or remove it.") from None
        cols = _id_columns(table.columns)
        if len(cols) < 2:
            raise DataError(
                f"the duplicate list {path} has no two image-id columns (found {', '.join(map(str, table.columns))}); "
                "name them e.g. image_name_1,image_name_2."
            )
        a, b = (table[c].str.strip().str.replace(r"\.(jpe?g|png)$", "", regex=True, case=False) for c in cols)
        rows = [(row_of.get(x), row_of.get(y)) for x, y in zip(a, b, strict=True)]
        found = [(x, y) for x, y in rows if x is not None and y is not None and x != y]
        pairs += found
        notes.append(f"read {len(found)} of {len(table)} known duplicate pairs from {path.name}.")
    arr = np.sort(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    return arr, notes


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` nodes joined by ``pairs`` (transitive closure), int ``(n,)``."""
    if n == 0:
        return np.empty(0, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    # scipy loads on first use: the command line reads the data set names without it
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components  # (with coo_matrix, above)

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def group_labels(n: int, pairs: np.ndarray) -> np.ndarray:
    """Group number per row: 1, 2, … in order of first row for groups of ≥ 2 images, 0 for the rest."""
    comp = components(n, pairs)
    sizes = np.bincount(comp, minlength=n) if n else np.empty(0, dtype=np.int64)
    out = np.zeros(n, dtype=np.int64)
    order = pd.unique(comp[sizes[comp] > 1])
    remap = {c: k + 1 for k, c in enumerate(order)}
    mask = sizes[comp] > 1
    out[mask] = [remap[c] for c in comp[mask]]
    return out


def find_groups(
    frame: pd.DataFrame, data_dir: Path | str, dataset: str, *, max_distance: float = MAX_DISTANCE
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Near-duplicate groups of a data set's images.

    Returns:
        ``(group, source, notes)``: group number per row (0: no near-duplicate), per row
        ``"fingerprint"``, ``"list"`` or ``"both"`` (how its group was found, ``""`` outside groups),
        and sentences about the known-duplicate lists read.
    """
    fps = compute_fingerprints(frame, data_dir, dataset)
    found = near_duplicate_pairs(fps, max_distance)
    listed, notes = known_duplicate_pairs(data_dir, frame["image_id"].astype(str).tolist())
    group = group_labels(len(frame), np.concatenate([found, listed]))
    by_fp, by_list = np.zeros(len(frame), bool), np.zeros(len(frame), bool)
    by_fp[found.ravel()] = True
    by_list[listed.ravel()] = True
    source = np.select([by_fp & by_list, by_fp, by_list], ["both", "fingerprint", "list"], "")
    return group, np.where(group > 0, source, ""), notes


# --------------------------------------------------------------------------------------------
# Policies.
# --------------------------------------------------------------------------------------------


def conflicting_groups(group: np.ndarray, labels: np.ndarray) -> set[int]:
    """Groups whose images do not all carry the same label."""
    if not (group > 0).any():
        return set()
    per = pd.Series(labels[group > 0]).groupby(group[group > 0]).nunique()
    return set(per.index[per > 1].tolist())


def drop_keep_mask(group: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The ``drop`` policy: which rows stay, and sentences saying what went.

    Keeps the first row of each group; a group whose labels conflict is dropped whole.
    """
    conflict = conflicting_groups(group, labels)
    in_group = group > 0
    first = ~pd.Series(group).duplicated().to_numpy()
    bad = np.isin(group, list(conflict)) & in_group
    keep = ~in_group | (first & ~bad)
    n_groups = len(np.unique(group[in_group]))
    notes = []
    if n_groups:
        notes.append(
            f"duplicates policy drop: kept one image of each of {n_groups - len(conflict)} near-duplicate groups "
            f"and dropped {int((in_group & ~bad & ~keep).sum())} copies."
        )
    if conflict:
        notes.append(
            f"duplicates policy drop: dropped {len(conflict)} near-duplicate group(s) whole "
            f"({int(bad.sum())} images) because their labels conflict (groups {', '.join(map(str, sorted(conflict)))})."
        )
    return keep, notes


def split_units(patients: Sequence[str], group: np.ndarray) -> np.ndarray:
    """The unit a split must keep whole: a duplicate group joined with its images' patients.

    Each unit is named by the smallest patient id in it, so without duplicates every unit is
    exactly its patient and the seeded splits are the ones ``--duplicates ignore`` makes.

    Returns:
        str array ``(N,)``.
    """
    patients = np.asarray(patients, dtype=str)
    n = len(patients)
    pid_codes, _ = pd.factorize(pd.Series(patients))
    # Nodes 0..n-1 are images, n.. are patients; a group joins its images to its first image.
    edges = [np.stack([np.arange(n), n + pid_codes], axis=1)]
    first_of = pd.Series(np.arange(n)).groupby(group).transform("first").to_numpy()
    in_group = group > 0
    edges.append(np.stack([np.flatnonzero(in_group), first_of[in_group]], axis=1))
    comp = components(n + int(pid_codes.max(initial=-1)) + 1, np.concatenate(edges))[:n]
    return pd.Series(patients).groupby(comp).transform("min").to_numpy(dtype=str)


def keep_units_in_one_split(split: np.ndarray, units: np.ndarray, order: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """For layouts that fix the split: move each unit spanning splits into the split holding most of it.

    Ties go to the split that comes first in ``order`` (train, val, test).

    Returns:
        ``(split, notes)``: the new split per row and a sentence if anything moved.
    """
    frame = pd.DataFrame({"unit": units, "split": split})
    rank = {s: k for k, s in enumerate(order)}
    spans = frame.groupby("unit")["split"].nunique()
    crossing = spans.index[spans > 1]
    if not len(crossing):
        return np.asarray(split, dtype=object), []
    sub = frame[frame["unit"].isin(crossing)]
    counts = sub.groupby(["unit", "split"]).size().reset_index(name="n")
    counts["rank"] = counts["split"].map(rank).fillna(len(rank))
    target = counts.sort_values(["unit", "n", "rank"], ascending=[True, False, True]).drop_duplicates("unit")
    new = frame["unit"].map(dict(zip(target["unit"], target["split"], strict=True))).fillna(frame["split"])
    moved = int((new != frame["split"]).sum())
    note = (
        f"duplicates policy group: moved {moved} image(s) of {len(crossing)} near-duplicate group(s) that crossed "
        "the layout's splits into the split holding most of each group."
    )
    return new.to_numpy(dtype=object), [note]


def group_table(
    frame: pd.DataFrame, group: np.ndarray, source: np.ndarray, split_before: np.ndarray, kept: np.ndarray
) -> pd.DataFrame:
    """One row per image in a near-duplicate group (columns :data:`GROUP_COLUMNS`).

    Args:
        frame: the rows before any policy removed one, with ``split`` set for the rows kept.
        group: group number per row (0: none).
        source: how each row's group was found (:func:`find_groups`).
        split_before: the split each row gets without duplicate handling (``--duplicates ignore``).
        kept: whether each row stays in the index.
    """
    mask = group > 0
    if not mask.any():
        return empty_groups()
    conflict = conflicting_groups(group, frame["label"].to_numpy())
    split = np.where(kept, frame["split"].astype(str).to_numpy(), "")
    table = pd.DataFrame(
        {
            "group": group[mask],
            "image_id": frame["image_id"].to_numpy()[mask],
            "patient_id": frame["patient_id"].to_numpy()[mask],
            "label": frame["label"].to_numpy()[mask],
            "split_before": np.asarray(split_before, dtype=object)[mask],
            "split": split[mask],
            "kept": kept[mask],
            "conflicting": np.isin(group[mask], list(conflict)),
            "source": source[mask],
        }
    )
    return table.sort_values(["group", "image_id"], kind="stable").reset_index(drop=True)


def with_final_split(groups: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``groups`` with ``split`` taken from the final index ``frame`` (``""`` for rows the low-data subsample left out)."""
    final = dict(zip(frame["image_id"].astype(str), frame["split"], strict=True))
    return groups.assign(split=groups["image_id"].astype(str).map(final).fillna(""))


def duplicate_counts(groups: pd.DataFrame) -> dict[str, float]:
    """Counts to log as metrics of a training run (from ``DataIndex.duplicate_groups``).

    Returns:
        ``duplicate_groups`` (groups of ≥ 2 images), ``duplicate_images`` (images in them),
        ``duplicate_groups_crossing`` (groups spread over several splits without duplicate handling),
        ``duplicate_groups_conflicting`` (groups whose labels differ), ``duplicate_images_dropped``
        (images the ``drop`` policy removed).
    """
    if not len(groups):
        keys = ("groups", "images", "groups_crossing", "groups_conflicting", "images_dropped")
        return {f"duplicate_{k}": 0.0 for k in keys}
    per = groups.groupby("group")
    return {
        "duplicate_groups": float(per.ngroups),
        "duplicate_images": float(len(groups)),
        "duplicate_groups_crossing": float((per["split_before"].nunique() > 1).sum()),
        "duplicate_groups_conflicting": float(per["conflicting"].any().sum()),
        "duplicate_images_dropped": float((~groups["kept"].astype(bool)).sum()),
    }


def describe_groups(groups: pd.DataFrame, *, limit: int = 20) -> list[str]:
    """Sentences for ``data check``: how many groups, how many cross the old splits or conflict, with ids."""
    counts = duplicate_counts(groups)
    n = int(counts["duplicate_groups"])
    if n == 0:
        return ["no near-duplicate images found."]
    lines = [
        f"{n} near-duplicate group(s) ({int(counts['duplicate_images'])} images); crossing the splits made "
        f"without duplicate handling (--duplicates ignore): {int(counts['duplicate_groups_crossing'])}; "
        f"with conflicting labels: {int(counts['duplicate_groups_conflicting'])}."
    ]
    for number, part in list(groups.groupby("group"))[:limit]:
        tags = [
            t
            for t, on in (
                ("crosses splits", part["split_before"].nunique() > 1),
                ("conflicting labels", part["conflicting"].any()),
            )
            if on
        ]
        lines.append(f"group {number}: {', '.join(part['image_id'])}" + (f" ({'; '.join(tags)})" if tags else "") + ".")
    if n > limit:
        lines.append(f"… and {n - limit} more group(s); --duplicates-out FILE.csv writes them all.")
    return lines
