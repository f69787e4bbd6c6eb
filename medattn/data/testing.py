"""Tiny data folders in the real on-disk formats of the data sets (``docs/datasets.md``), for tests and dry runs.

Each writer draws small random images (tens of pixels) with a given generator seed and returns
the folder, so tests of any stage can run the real readers without the real data. The demo set
has its own generator, :func:`medattn.data.write_synthetic`.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from medattn import lazy

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help


def _image(rng: np.random.Generator, path: Path, mode: str = "RGB", size: tuple[int, int] = (40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)


def write_fake_aptos(root: Path | str, n: int = 40, seed: int = 0, resized: bool = False) -> Path:
    """APTOS 2019: ``train.csv`` (``id_code,diagnosis``) + ``train_images/<id>.png`` (or ``train_resized/``).

    Grades cycle 0,0,0,1,2,3,4,0,2,... so about half the images are referable (grade > 0).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = [f"{k:04x}{rng.integers(0, 16**8):08x}" for k in range(n)]
    grades = [(0, 0, 0, 1, 2, 3, 4, 0, 2, 1)[k % 10] for k in range(n)]
    folder = root / ("train_resized" if resized else "train_images")
    for i in ids:
        _image(rng, folder / f"{i}.png")
    pd.DataFrame({"id_code": ids, "diagnosis": grades}).to_csv(root / "train.csv", index=False)
    return root


def write_fake_isic(
    root: Path | str, patients: int = 12, per_patient: int = 3, seed: int = 0, csv_name: str = "train.csv"
) -> Path:
    """ISIC 2020: the 8-column ground-truth CSV + ``jpeg/train/<image_name>.jpg``; ~1/3 melanoma."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        for k in range(per_patient):
            name = f"ISIC_{p * per_patient + k:07d}"
            target = int((p + k) % 3 == 0)
            rows.append(
                {
                    "image_name": name,
                    "patient_id": f"IP_{p:07d}",
                    "sex": ("male", "female")[p % 2],
                    "age_approx": 30 + 5 * (p % 8),
                    "anatom_site_general_challenge": "torso",
                    "diagnosis": "melanoma" if target else "nevus",
                    "benign_malignant": "malignant" if target else "benign",
                    "target": target,
                }
            )
            _image(rng, root / "jpeg" / "train" / f"{name}.jpg")
    pd.DataFrame(rows).to_csv(root / csv_name, index=False)
    return root


MIMIC_LABEL_CYCLE = (1.0, 0.0, -1.0, np.nan, 1.0, 0.0)


def write_fake_mimic_jpg(root: Path | str, subjects: int = 12, seed: int = 0, gz: bool = False) -> Path:
    """MIMIC-CXR-JPG: ``mimic-cxr-2.0.0-{metadata,split,chexpert}.csv`` + ``files/p1X/p<sid>/s<study>/<dicom>.jpg``.

    Each subject has 2 studies of 3 images (2 AP, 1 PA); Pleural Effusion cycles through
    1.0, 0.0, -1.0, blank, 1.0, 0.0 over studies; subjects 0-7 are train, 8-9 validate, 10+ test.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    meta, split, chex = [], [], []
    study_no = 0
    for s in range(subjects):
        sid = str(10000032 + 1000 * s + (s % 2) * 1_000_000)
        official = "train" if s < 8 else "validate" if s < 10 else "test"
        for _ in range(2):
            study = str(50000000 + study_no)
            chex.append(
                {
                    "subject_id": sid,
                    "study_id": study,
                    "Pleural Effusion": MIMIC_LABEL_CYCLE[study_no % 6],
                    "Edema": 0.0,
                }
            )
            study_no += 1
            for view in ("AP", "AP", "PA"):
                dicom = f"{rng.integers(0, 16**8):08x}-{len(meta):04d}"
                meta.append(
                    {
                        "dicom_id": dicom,
                        "subject_id": sid,
                        "study_id": study,
                        "ViewPosition": view,
                        "Rows": 32,
                        "Columns": 40,
                    }
                )
                split.append({"dicom_id": dicom, "study_id": study, "subject_id": sid, "split": official})
                _image(rng, root / "files" / f"p{sid}"[:3] / f"p{sid}" / f"s{study}" / f"{dicom}.jpg", mode="L")
    suffix = ".csv.gz" if gz else ".csv"
    pd.DataFrame(meta).to_csv(root / f"mimic-cxr-2.0.0-metadata{suffix}", index=False)
    pd.DataFrame(split).to_csv(root / f"mimic-cxr-2.0.0-split{suffix}", index=False)
    pd.DataFrame(chex).to_csv(root / f"mimic-cxr-2.0.0-chexpert{suffix}", index=False)
    return root


def write_fake_mimic_folders(root: Path | str, per_split: tuple[int, int, int] = (20, 8, 8), seed: int = 0) -> Path:
    """The original project's MIMIC layout: ``{Train,Val,Test}_images_AP_resized/`` with ``Annotations.pickle``.

    Each annotation is an ``(N, 2)`` object array ``[relative path without .jpg, label]``; images
    sit at ``<folder>/p1X/p<sid>/s<study>/<dicom>.jpg``, one patient per 2 images.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    k = 0
    for name, n in zip(
        ("Train_images_AP_resized", "Val_images_AP_resized", "Test_images_AP_resized"), per_split, strict=True
    ):
        folder = root / name
        entries = []
        for j in range(n):
            sid = str(11000000 + k // 2)
            rel = f"p{sid}"[:3] + f"/p{sid}/s{52000000 + k}/img{k:05d}"
            _image(rng, folder / f"{rel}.jpg", mode="L")
            entries.append([rel, str(j % 2)])
            k += 1
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "Annotations.pickle").open("wb") as fh:
            pickle.dump(np.asarray(entries, dtype=object), fh)
    return root


def write_png_bomb(path: Path, side: int = 13000) -> Path:
    """A decompression bomb: a valid greyscale PNG of ``side`` × ``side`` black pixels (about 170 KB for
    13000, 169 Mpx: above medattn's pixel budget, below Pillow's own ``DecompressionBombError``).

    Written chunk by chunk with zlib (not through PIL) so that the test itself never holds the
    169 MB of pixels it declares.
    """
    comp = zlib.compressobj(6)
    row = b"\0" * (side + 1)  # filter byte + pixels
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path
