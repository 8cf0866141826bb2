"""Quality vs strong-model-call plots, one PNG per benchmark (matplotlib is optional)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .metrics import Curve

INSTALL_HINT = "plotting needs matplotlib: pip install lmroute[eval]"


def plot_benchmark(
    curves: Mapping[str, Curve],
    benchmark_name: str,
    path: str | Path,
    oracle: tuple[np.ndarray, np.ndarray] | None = None,
    quality_label: str = "quality",
    model_names: tuple[str, str] = ("strong model", "weak model"),
) -> Path:
    """Write a PNG of quality against strong-call % for each router in `curves`.

    Adds dashed horizontal lines at the weak and strong model's quality (labelled with
    `model_names`, a (strong, weak) pair) and, when given, the oracle ("optimal") line as
    (strong %, quality) points. Raises ImportError with an install hint when matplotlib is
    missing.
    """
    if not curves:
        raise ValueError("plot_benchmark needs at least one curve")
    try:
        # The object-oriented API renders with Agg and leaves pyplot's global state alone.
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc

    fig = Figure(figsize=(10, 6))
    ax = fig.add_subplot()
    for name, curve in curves.items():
        order = np.lexsort((curve.quality, curve.strong_pct))
        ax.plot(curve.strong_pct[order], curve.quality[order], marker=".", label=name)

    reference = next(iter(curves.values()))
    strong_name, weak_name = model_names
    ax.axhline(reference.weak_quality, color="grey", linestyle="--", label=weak_name)
    ax.axhline(reference.strong_quality, color="red", linestyle="--", label=strong_name)
    if oracle is not None:
        ax.plot(oracle[0], oracle[1], color="black", linestyle=":", label="optimal")

    ax.set_xlabel("strong model calls (%)")
    ax.set_ylabel(quality_label)
    ax.set_xlim(0, 100)
    ax.set_title(f"Quality vs strong model calls ({benchmark_name})")
    ax.grid(alpha=0.3)
    ax.legend()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")
    return path
