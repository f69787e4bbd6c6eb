"""``medattn data check``: every problem of a data folder at once, then a per-split summary.

Besides problems (which fail the check), it reports the near-duplicate groups (:mod:`medattn.data.duplicates`) as notes:
how many, how many cross the splits made without duplicate handling, how many carry conflicting
labels, with the ids; ``duplicates_out`` writes every group's rows to a CSV.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medattn import lazy
from medattn.data.base import SPLITS, DatasetSpec, Table, duplicate_units, low_data_subsample, read_table
from medattn.data.duplicates import (
    GROUP_COLUMNS,
    MAX_DISTANCE,
    check_policy,
    describe_groups,
    empty_groups,
    find_groups,
    group_table,
    with_final_split,
)
from medattn.data.io import ImageReadError, read_image
from medattn.errors import DataError

pd = lazy.module("pandas")  # loads on first use: the command line imports this module for --help


@dataclass
class CheckReport:
    """Outcome of :func:`check_data`.

    Attributes:
        dataset: canonical data set name (the name given, if it is unknown).
        data_dir: the folder checked.
        problems: one sentence per problem.
        summary: columns ``split``, ``images``, ``positives`` (label > 0), one row per split.
        notes: rows left out by design (e.g. non-AP views) and the near-duplicate report, one
            sentence each.
        duplicate_groups: one row per image in a near-duplicate group (columns
            :data:`medattn.data.duplicates.GROUP_COLUMNS`).
    """

    dataset: str
    data_dir: Path
    problems: list[str] = field(default_factory=list)
    summary: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["split", "images", "positives"]))
    notes: list[str] = field(default_factory=list)
    duplicate_groups: pd.DataFrame = field(default_factory=empty_groups)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def _groups_to_report(
    spec: DatasetSpec, table: Table, data_dir: Path | str, policy: str, max_distance: float
) -> pd.DataFrame:
    """The groups of the chosen policy; under ``ignore`` they are still found, to be reported."""
    if policy != "ignore" or not len(table.frame):
        return table.duplicate_groups
    frame = table.frame
    group, source, _ = find_groups(frame, Path(data_dir).expanduser().resolve(), spec.name, max_distance=max_distance)
    split = frame["split"].to_numpy(dtype=object)
    return group_table(frame, group, source, split, np.ones(len(frame), dtype=bool))


def check_data(
    dataset: str,
    data_dir: Path | str,
    *,
    decode: bool = True,
    duplicates: str = "group",
    duplicates_out: Path | str | None = None,
    max_distance: float = MAX_DISTANCE,
    **load_index_kwargs,
) -> CheckReport:
    """Check a data folder: labels, files, every image decodable, no patient in two splits, near-duplicates.

    Args:
        dataset: data set name (aliases accepted).
        data_dir: the data folder.
        decode: decode every image fully (the slow part; off only for quick structural checks).
        duplicates: near-duplicate policy the splits are checked with (``group``/``drop``/``ignore``);
            groups are found and reported under every policy.
        duplicates_out: write every near-duplicate group's rows to this CSV (columns
            :data:`medattn.data.duplicates.GROUP_COLUMNS`).
        max_distance: largest fingerprint distance of a near-duplicate pair.
        **load_index_kwargs: as for :func:`medattn.data.load_index` (``multiclass``, ``uncertain``,
            ``low_data_regimen``, ``perc_train``, ``split_seed``).

    Returns:
        A :class:`CheckReport`; ``report.ok`` is False if anything is wrong.
    """
    report = CheckReport(dataset=str(dataset), data_dir=Path(data_dir))
    policy = check_policy(duplicates)
    low_data = load_index_kwargs.pop("low_data_regimen", False)
    perc_train = load_index_kwargs.pop("perc_train", 1.0)
    try:
        spec, table = read_table(dataset, data_dir, duplicates=policy, max_distance=max_distance, **load_index_kwargs)
    except DataError as exc:
        # Nothing past a missing folder or column can be read; an unknown name or option
        # (ConfigError) is the caller's mistake and propagates.
        report.problems.append(str(exc))
        return report
    report.dataset = spec.name
    report.problems += table.problems  # labels, files, and patients in two splits
    report.notes += table.notes
    frame = table.frame
    groups = _groups_to_report(spec, table, data_dir, policy, max_distance)
    if low_data:
        try:
            frame = low_data_subsample(
                frame, perc_train, seed=load_index_kwargs.get("split_seed", 42), units=duplicate_units(frame, groups)
            )
            groups = with_final_split(groups, frame)
        except DataError as exc:
            report.problems.append(str(exc))
    report.duplicate_groups = groups
    report.notes += describe_groups(groups)
    if duplicates_out is not None:
        out = Path(duplicates_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        groups[list(GROUP_COLUMNS)].to_csv(out, index=False)
        report.notes.append(
            f"wrote {len(groups)} rows of {groups['group'].nunique()} near-duplicate group(s) to {out}."
        )
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
            report.problems.append(
                f"the {name} split of {spec.name} in {data_dir} is empty; add images to the data set."
            )
    report.summary = pd.DataFrame(rows)
    return report
