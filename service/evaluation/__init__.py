"""Router evaluation harness reproducing the RouteLLM paper's procedure (arXiv 2406.18665).

Transport-free: load a benchmark, score its prompts with a router, and compute the routing
curve, APGR and CPT exactly as RouteLLM does; `evaluate` runs it all and writes the results.
"""

from .benchmarks import (
    BENCHMARKS,
    STRONG_MODEL,
    WEAK_MODEL,
    Benchmark,
    default_data_dir,
    load_benchmark,
    oracle_curve,
    resolve_benchmarks,
)
from .metrics import Curve, apgr, cpt, mean_curve, oracle_points, pgr, routing_curve
from .plots import plot_benchmark
from .report import Result, format_table, write_csv, write_json
from .runner import evaluate, score_prompts, stderr_progress

__all__ = [
    "BENCHMARKS",
    "STRONG_MODEL",
    "WEAK_MODEL",
    "Benchmark",
    "Curve",
    "Result",
    "apgr",
    "cpt",
    "default_data_dir",
    "evaluate",
    "format_table",
    "load_benchmark",
    "mean_curve",
    "oracle_curve",
    "oracle_points",
    "pgr",
    "plot_benchmark",
    "resolve_benchmarks",
    "routing_curve",
    "score_prompts",
    "stderr_progress",
    "write_csv",
    "write_json",
]
