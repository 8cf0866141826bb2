"""Evaluation results: the Result record, its CSV/JSON files and a printable table."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._files import atomic_write
from .metrics import Curve

CSV_FIELDS = (
    "benchmark",
    "router",
    "apgr",
    "cpt50",
    "cpt80",
    "apgr_sd",
    "cpt50_sd",
    "cpt80_sd",
    "n_seeds",
    "n_prompts",
    "weak_quality",
    "strong_quality",
)


@dataclass(frozen=True, eq=False)
class Result:
    """One router on one benchmark. CPTs are strong-call percentages (0-100).

    For a seeded router (random) the metrics are means over `n_seeds` seeds, the `*_sd`
    fields their sample standard deviations, and `curve` the point-wise mean curve;
    otherwise `n_seeds` is 1 and the standard deviations are 0.
    """

    benchmark: str
    router: str
    apgr: float
    cpt50: float
    cpt80: float
    apgr_sd: float
    cpt50_sd: float
    cpt80_sd: float
    n_seeds: int
    n_prompts: int
    weak_quality: float
    strong_quality: float
    curve: Curve

    def row(self) -> dict[str, Any]:
        """The flat fields (no curve points), in CSV_FIELDS order."""
        return {field: getattr(self, field) for field in CSV_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """The flat fields plus the curve points, JSON-ready."""
        data = self.row()
        data["curve"] = {
            "thresholds": self.curve.thresholds.tolist(),
            "strong_pct": self.curve.strong_pct.tolist(),
            "quality": self.curve.quality.tolist(),
        }
        return data


def write_csv(results: Sequence[Result], path: str | Path) -> None:
    """One row per (router, benchmark), without curve points."""
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for result in results:
            writer.writerow(result.row())


def write_json(results: Sequence[Result], path: str | Path, **metadata: Any) -> None:
    """`{**metadata, "results": [...]}` with each result's curve points."""
    payload = {**metadata, "results": [result.to_dict() for result in results]}
    with atomic_write(path) as handle:
        json.dump(payload, handle, indent=2, allow_nan=False)
        handle.write("\n")


def format_table(results: Sequence[Result]) -> str:
    """A fixed-width table: benchmark, router, APGR (± sd over seeds), CPT(50%), CPT(80%), n."""
    header = ("benchmark", "router", "APGR", "CPT(50%)", "CPT(80%)", "n")
    rows = [header]
    for r in results:
        apgr_text = f"{r.apgr:.3f}" if r.n_seeds <= 1 else f"{r.apgr:.3f} ± {r.apgr_sd:.3f}"
        rows.append(
            (
                r.benchmark,
                r.router,
                apgr_text,
                f"{r.cpt50:.1f}%",
                f"{r.cpt80:.1f}%",
                str(r.n_prompts),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        left = [cell.ljust(width) for cell, width in zip(row[:2], widths[:2], strict=True)]
        right = [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(left + right).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
