"""``medattn data check``: every problem of a data folder at once, then a per-split summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from medattn.data.base import SPLITS, low_data_subsample, read_table
from medattn.data.io import ImageReadError, read_image
from medattn.errors import DataError


@dataclass
class CheckReport:
    """Outcome of :func:`check_data`.

    Attributes:
        dataset: canonical data set name (the name given, if it is unknown).
        data_dir: the folder checked.
        problems: one sentence per problem.
        summary: columns ``split``, ``images``, ``positives`` (label > 0), one row per split.
        notes: rows left out by design (e.g. non-AP views), one sentence each.
    """

    dataset: str
    data_dir: Path
    problems: list[str] = field(default_factory=list)
    summary: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["split", "images", "positives"]))
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def _leaks(frame: pd.DataFrame) -> list[str]:
    per_patient = frame.groupby("patient_id")["split"].agg(lambda s: sorted(set(s), key=SPLITS.index))
    return [
        f"patient {p} has images in {' and '.join(s)}; the split must keep each patient in one split."
        for p, s in per_patient.items()
        if len(s) > 1
    ]


def check_data(dataset: str, data_dir: Path | str, *, decode: bool = True, **load_index_kwargs) -> CheckReport:
    """Check a data folder: labels, files, every image decodable, no patient in two splits.

    Args:
        dataset: data set name (aliases accepted).
        data_dir: the data folder.
        decode: decode every image fully (the slow part; off only for quick structural checks).
        **load_index_kwargs: as for :func:`medattn.data.load_index` (``multiclass``, ``uncertain``,
            ``low_data_regimen``, ``perc_train``, ``split_seed``).

    Returns:
        A :class:`CheckReport`; ``report.ok`` is False if anything is wrong.
    """
    report = CheckReport(dataset=str(dataset), data_dir=Path(data_dir))
    low_data = load_index_kwargs.pop("low_data_regimen", False)
    perc_train = load_index_kwargs.pop("perc_train", 1.0)
    try:
        spec, table = read_table(dataset, data_dir, **load_index_kwargs)
    except DataError as exc:
        # Nothing past a missing folder or column can be read; an unknown name or option
        # (ConfigError) is the caller's mistake and propagates.
        report.problems.append(str(exc))
        return report
    report.dataset = spec.name
    report.problems += table.problems
    report.notes += table.notes
    frame = table.frame
    if low_data:
        try:
            frame = low_data_subsample(frame, perc_train, seed=load_index_kwargs.get("split_seed", 42))
        except DataError as exc:
            report.problems.append(str(exc))
    if spec.has_patients and len(frame):
        report.problems += _leaks(frame)
    if decode:
        for path in tqdm(frame["path"], desc=f"check {spec.name}", unit="img"):
            try:
                read_image(path)
            except ImageReadError as exc:
                report.problems.append(str(exc))
    rows = []
    for name in SPLITS:
        part = frame[frame["split"] == name]
        rows.append({"split": name, "images": len(part), "positives": int((part["label"] > 0).sum())})
        if len(part) == 0:
            report.problems.append(f"the {name} split of {spec.name} in {data_dir} is empty; add images to the data set.")
    report.summary = pd.DataFrame(rows)
    return report
