"""Evaluate routers on benchmarks: score (with a cache), build curves, write results and plots."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .benchmarks import BENCHMARKS, Benchmark, load_benchmark, oracle_curve
from .cache import CacheKey, ScoreCache, prompts_digest
from .metrics import Curve, apgr, cpt, mean_curve, routing_curve
from .plots import INSTALL_HINT, plot_benchmark
from .report import Result, format_table, write_csv, write_json

if TYPE_CHECKING:
    # Typing only: importing service.routers at runtime would load onnxruntime and tokenizers.
    from service.routers.base import Router

__all__ = ["ProgressFn", "evaluate", "format_table", "score_prompts", "stderr_progress"]

# A router with this name is random: it is evaluated once per seed via `with_seed(seed)`.
RANDOM_ROUTER = "random"

ProgressFn = Callable[[str, int, int], None]
"""Called as progress(label, prompts_done, prompts_total) while a router scores."""


def stderr_progress(label: str, done: int, total: int) -> None:
    """A progress counter on stderr (no tqdm needed): rewritten in place on a terminal,
    a single line per finished router/benchmark otherwise (logs stay readable)."""
    finished = done >= total
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{label}: {done}/{total} prompts" + ("\n" if finished else ""))
    elif finished:
        sys.stderr.write(f"{label}: scored {total} prompts\n")
    sys.stderr.flush()


def evaluate(
    routers: Mapping[str, Router],
    benchmarks: Sequence[str],
    data_dir: str | Path,
    output_dir: str | Path,
    random_seeds: int = 10,
    num_results: int = 10,
    *,
    chunk_size: int = 256,
    progress: ProgressFn | None = stderr_progress,
    plot: bool = True,
) -> list[Result]:
    """Run the RouteLLM evaluation of every router on every benchmark.

    `routers` maps the label used in results and plots to a router. Each router scores the
    benchmark prompts for the benchmark's own (strong, weak) model names. A router named
    "random" is evaluated once per seed 0..random_seeds-1 (via `with_seed`); its metrics are
    the means over seeds (with sample SDs) and its curve the mean curve.

    Scores are cached in `output_dir/cache/` per (router name, artifact hash, benchmark,
    prompts). Results go to `output_dir/results.csv` (no curve points),
    `output_dir/results.json` (with curve points) and `output_dir/<benchmark>.png` (skipped
    with a warning when matplotlib is missing, or when `plot` is False).
    """
    if not routers:
        raise ValueError("evaluate needs at least one router")
    unknown = [name for name in benchmarks if name not in BENCHMARKS]
    if unknown or not benchmarks:
        raise ValueError(f"unknown or no benchmarks {list(benchmarks)}; choose from: {', '.join(BENCHMARKS)}")
    if random_seeds < 1:
        raise ValueError(f"random_seeds must be >= 1, got {random_seeds}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    output_dir = Path(output_dir)
    cache = ScoreCache(output_dir / "cache")
    # Load every benchmark first so that a bad data directory fails before any scoring.
    loaded = [load_benchmark(name, data_dir) for name in dict.fromkeys(benchmarks)]

    results: list[Result] = []
    for benchmark in loaded:
        digest = prompts_digest(benchmark.prompts)
        curves: dict[str, Curve] = {}
        for label, router in routers.items():
            variants = _variants(router, random_seeds)
            variant_curves = []
            for variant, seeded in variants:
                key = CacheKey(seeded.name, seeded.artifact_hash, benchmark.name, digest, variant)
                scores = cache.load(key, len(benchmark))
                if scores is None:
                    name = f"{benchmark.name} / {label}" + (f" ({variant})" if variant else "")
                    scores = score_prompts(seeded, benchmark, chunk_size, progress, name)
                    cache.save(key, scores)
                variant_curves.append(_curve(benchmark, scores, num_results))
            result = _summarize(benchmark, label, variant_curves)
            results.append(result)
            curves[label] = result.curve
        if plot:
            _plot(curves, benchmark, output_dir / f"{benchmark.name}.png")

    write_csv(results, output_dir / "results.csv")
    write_json(
        results,
        output_dir / "results.json",
        num_results=num_results,
        random_seeds=random_seeds,
        benchmarks={
            b.name: {
                "n_prompts": len(b),
                "n_contaminated": b.n_contaminated,
                "strong_model": b.strong_model,
                "weak_model": b.weak_model,
            }
            for b in loaded
        },
    )
    return results


def score_prompts(
    router: Router,
    benchmark: Benchmark,
    chunk_size: int = 256,
    progress: ProgressFn | None = None,
    label: str = "",
) -> np.ndarray:
    """Score `benchmark.prompts` in chunks, checking the router returns one finite score each."""
    total = len(benchmark.prompts)
    parts = []
    for start in range(0, total, chunk_size):
        chunk = benchmark.prompts[start : start + chunk_size]
        scores = np.asarray(
            router.score(chunk, benchmark.strong_model, benchmark.weak_model), dtype=np.float64
        )
        if scores.shape != (len(chunk),):
            raise ValueError(
                f"router {router.name!r} returned scores of shape {scores.shape} for {len(chunk)} prompts"
            )
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"router {router.name!r} returned non-finite scores")
        parts.append(scores)
        if progress is not None:
            progress(label or router.name, start + len(chunk), total)
    return np.concatenate(parts) if parts else np.empty(0)


def _variants(router: Router, random_seeds: int) -> list[tuple[str, Router]]:
    """(cache variant, router) pairs: one per seed for the random router, else the router."""
    if router.name != RANDOM_ROUTER:
        return [("", router)]
    with_seed = getattr(router, "with_seed", None)
    if with_seed is None:
        raise TypeError(f"router {RANDOM_ROUTER!r} must provide with_seed(seed) -> Router")
    return [(f"seed{seed}", with_seed(seed)) for seed in range(random_seeds)]


def _curve(benchmark: Benchmark, scores: np.ndarray, num_results: int) -> Curve:
    return routing_curve(
        scores,
        benchmark.strong_outcome,
        benchmark.weak_outcome,
        num_results,
        weights=benchmark.weights,
        weak_weights=benchmark.weak_weights,
    )


def _summarize(benchmark: Benchmark, label: str, curves: list[Curve]) -> Result:
    """Metrics of one router; with several seeds, their means and sample SDs."""
    metrics = np.array([(apgr(c), cpt(c, 0.5), cpt(c, 0.8)) for c in curves])
    mean = metrics.mean(axis=0)
    sd = metrics.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(3)
    curve = curves[0] if len(curves) == 1 else mean_curve(curves)
    return Result(
        benchmark=benchmark.name,
        router=label,
        apgr=float(mean[0]),
        cpt50=float(mean[1]),
        cpt80=float(mean[2]),
        apgr_sd=float(sd[0]),
        cpt50_sd=float(sd[1]),
        cpt80_sd=float(sd[2]),
        n_seeds=len(curves),
        n_prompts=len(benchmark),
        weak_quality=curve.weak_quality,
        strong_quality=curve.strong_quality,
        curve=curve,
    )


def _plot(curves: Mapping[str, Curve], benchmark: Benchmark, path: Path) -> None:
    try:
        plot_benchmark(
            curves,
            benchmark.name,
            path,
            oracle=oracle_curve(benchmark),
            quality_label=benchmark.quality_label,
            model_names=(benchmark.strong_model, benchmark.weak_model),
        )
    except ImportError:
        warnings.warn(f"{INSTALL_HINT}; skipping {path.name}", RuntimeWarning, stacklevel=3)
