"""What the report template renders: numbers that carry the runs they come from (:class:`Num`), tables,
inlined figures, bullets and sections.
"""

from __future__ import annotations

import base64
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: Resolution of inlined figures (the figures are drawn at 100 dpi; the page shows them smaller).
FIGURE_DPI = 80
GRID_DPI = 50


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}".replace("-", "\N{MINUS SIGN}")


@dataclass(frozen=True)
class Num:
    """A number on the page and the runs it comes from.

    ``value`` is a run's metric, or the mean over ``runs`` (one per seed) with its ``sd``;
    ``ci_low`` / ``ci_high`` its 95 % CI where one run logged them. A number without runs is the
    original project's (``--paper``).
    """

    value: float
    runs: tuple[str, ...]
    metric: str
    sd: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    digits: int = 3  # decimals; 0: an integer with thousands separators; -2: two significant digits (p-values)
    signed: bool = False
    seeds: int | None = None  # the number of seeds behind a mean ± sd (default: one per run)
    kind: str = "num"

    @property
    def finite(self) -> bool:
        """Whether there is a value to show."""
        return math.isfinite(self.value)

    def _fmt(self, v: float) -> str:
        if self.digits == 0:
            return f"{v:,.0f}"
        if self.digits < 0:
            return f"{v:.{-self.digits}g}"
        return _signed(v, self.digits) if self.signed else f"{v:.{self.digits}f}"

    @property
    def text(self) -> str:
        """``0.812 [0.771, 0.853]`` (one run with a CI), ``0.812 ± 0.010 (3 seeds)`` (several runs), ``0.812``."""
        if not self.finite:
            return "not logged"
        text = self._fmt(self.value)
        seeds = self.seeds if self.seeds is not None else len(self.runs)
        if seeds > 1 and math.isfinite(self.sd):
            return f"{text} ± {self.sd:.{max(self.digits, 1)}f} ({seeds} seeds)"
        if math.isfinite(self.ci_low) and math.isfinite(self.ci_high):
            return f"{text} [{self._fmt(self.ci_low)}, {self._fmt(self.ci_high)}]"
        return text


@dataclass(frozen=True)
class RunRef:
    """A link to one run (its short id on the page, the full id in the link and the CSV)."""

    run_id: str
    kind: str = "run"


@dataclass
class Table:
    """A table of the page: cells are text, :class:`Num` or :class:`RunRef`; ``name`` is its HTML id
    and the stem of its CSV artifact (``tables/<name>.csv``)."""

    name: str
    caption: str
    columns: list[str]
    rows: list[list[Any]]
    layout: str = "rows"  # "pairs": a two-column (name, value) table drawn as a compact grid of pairs

    def frame(self) -> pd.DataFrame:
        """The table as numbers: a :class:`Num` column becomes its value, and ``_sd``, ``_ci_low``,
        ``_ci_high`` where any row has them, and ``_runs`` (space-separated run ids)."""
        data: dict[str, list[Any]] = {}
        for j, column in enumerate(self.columns):
            key = _snake(column)
            cells = [row[j] if j < len(row) else "" for row in self.rows]
            nums = [c for c in cells if isinstance(c, Num)]
            if not nums:
                data[key] = [_plain(c) for c in cells]
                continue
            data[key] = [c.value if isinstance(c, Num) else (c or math.nan) for c in cells]
            for part in ("sd", "ci_low", "ci_high"):
                if any(math.isfinite(getattr(n, part)) for n in nums):
                    data[f"{key}_{part}"] = [getattr(c, part) if isinstance(c, Num) else math.nan for c in cells]
            if any(n.runs for n in nums):
                data[f"{key}_runs"] = [" ".join(c.runs) if isinstance(c, Num) else "" for c in cells]
        return pd.DataFrame(data)


@dataclass(frozen=True)
class Figure:
    """An inlined PNG (``data:image/png;base64,...``) with its title and caption."""

    title: str
    uri: str
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Bullet:
    """A sentence and the runs its numbers come from."""

    text: str
    runs: tuple[str, ...] = ()


@dataclass
class Section:
    """One section of the page, rendered in the order of its parts."""

    id: str
    title: str
    intro: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    bullets: list[Bullet] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _plain(cell: Any) -> Any:
    """A non-number cell as CSV holds it: a run id, run ids separated by spaces, or the text."""
    if isinstance(cell, RunRef):
        return cell.run_id
    if isinstance(cell, tuple):
        return " ".join(_plain(c) for c in cell)
    return cell


def _snake(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower().replace("%", "pct").replace("Δ", "delta_")).strip("_")


def figure_uri(fig, dpi: int = FIGURE_DPI, *, photo: bool = False) -> str:
    """A matplotlib figure as a ``data:`` URI: PNG for plots, JPEG (quality 85) for ``photo`` figures
    such as saliency grids, whose noisy heat maps PNG compresses to megabytes."""
    buf = io.BytesIO()
    if photo:
        fig.savefig(buf, format="jpeg", dpi=dpi, pil_kwargs={"quality": 85, "optimize": True})
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
