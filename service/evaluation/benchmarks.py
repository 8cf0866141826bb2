"""Loaders for the RouteLLM benchmarks (MT-Bench, MMLU, GSM8K) in the RouteLLM repo layout.

Each loader reads the data in place, drops the contaminated prompts exactly as RouteLLM does
(a prompt is dropped when its text equals a listed `eval_prompt`), and returns per-prompt
outcomes of the strong and weak model. Only the stdlib and numpy are used, so evaluation does
not need pandas.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from service.errors import DataLayoutError

from .metrics import oracle_points

STRONG_MODEL = "gpt-4-1106-preview"
WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"

BENCHMARKS = ("mt-bench", "mmlu", "gsm8k")

# Relative to the data directory; the layout of the RouteLLM repository's routellm/evals.
LAYOUT: dict[str, tuple[str, ...]] = {
    "mt-bench": (
        "routellm/mt_bench/question.jsonl",
        "routellm/mt_bench/judgements.jsonl",
        "routellm/mt_bench/contaminated_prompts.jsonl",
    ),
    "mmlu": (
        "routellm/mmlu/responses/mmlu_<subject>.csv",
        "routellm/mmlu/contaminated_prompts.jsonl",
    ),
    "gsm8k": (
        "routellm/gsm8k/gsm8k_responses.csv",
        "routellm/gsm8k/contaminated_prompts.jsonl",
    ),
}

_TRUE = {"true", "1", "1.0"}
_FALSE = {"false", "0", "0.0"}


@dataclass(frozen=True, eq=False)
class Benchmark:
    """One decontaminated benchmark: prompts and each model's per-prompt outcome.

    Outcomes are correctness (0/1) for MMLU and GSM8K and, for MT-Bench, the mean judge score
    over a question's judgement rows. `weights` holds the number of rows behind each strong
    outcome (1 for correctness benchmarks) and `weak_weights` those behind each weak outcome
    when they differ (None means the same as `weights`), so quality is a mean over rows.
    """

    name: str
    prompts: list[str]
    strong_outcome: np.ndarray
    weak_outcome: np.ndarray
    weights: np.ndarray
    strong_model: str = STRONG_MODEL
    weak_model: str = WEAK_MODEL
    weak_weights: np.ndarray | None = None
    n_contaminated: int = 0
    quality_label: str = "accuracy"

    def __len__(self) -> int:
        return len(self.prompts)


def default_data_dir() -> Path:
    """`../shared/data/eval` relative to the repository root of this checkout."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval"


def resolve_benchmarks(spec: str) -> list[str]:
    """Turn "all", a benchmark name, or a comma-separated list of names into names."""
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if names == ["all"]:
        return list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        raise ValueError(f"unknown benchmark {spec!r}; choose 'all' or one of: {', '.join(BENCHMARKS)}")
    return list(dict.fromkeys(names))


def load_benchmark(name: str, data_dir: str | Path) -> Benchmark:
    """Load and decontaminate benchmark `name` from `data_dir` (DataLayoutError if malformed)."""
    loaders: dict[str, Callable[[_Layout], Benchmark]] = {
        "mt-bench": _load_mt_bench,
        "mmlu": _load_mmlu,
        "gsm8k": _load_gsm8k,
    }
    if name not in loaders:
        raise ValueError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    layout = _Layout(name, Path(data_dir))
    if not layout.root.is_dir():
        layout.fail(f"data directory {layout.root} does not exist")
    return loaders[name](layout)


def oracle_curve(benchmark: Benchmark) -> tuple[np.ndarray, np.ndarray]:
    """(strong %, quality) of the oracle router on `benchmark`; see metrics.oracle_points."""
    return oracle_points(
        benchmark.strong_outcome,
        benchmark.weak_outcome,
        benchmark.weights,
        benchmark.weak_weights,
    )


class _Layout:
    """Resolves a benchmark's files and raises DataLayoutError naming the expected layout."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root

    def fail(self, problem: str) -> NoReturn:
        expected = "\n".join(f"  {path}" for path in LAYOUT[self.name])
        raise DataLayoutError(f"{problem}\nexpected layout for {self.name!r} under {self.root}:\n{expected}")

    def file(self, relative: str) -> Path:
        path = self.root / relative
        if not path.is_file():
            self.fail(f"missing file {path}")
        return path

    def read_jsonl(self, relative: str, required: Iterable[str]) -> list[dict[str, Any]]:
        path = self.file(relative)
        rows = []
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    self.fail(f"{path}:{line_no} is not valid JSON: {exc}")
                if not isinstance(row, dict):
                    self.fail(f"{path}:{line_no} is not a JSON object")
                missing = [key for key in required if key not in row]
                if missing:
                    self.fail(f"{path}:{line_no} lacks field(s) {', '.join(missing)}")
                rows.append(row)
        return rows

    def read_csv(self, path: Path, required: Iterable[str]) -> list[dict[str, str]]:
        # newline="" lets the csv module handle the quoted newlines inside MMLU prompts.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [col for col in required if col not in (reader.fieldnames or [])]
            if missing:
                self.fail(f"{path} lacks column(s) {', '.join(missing)}")
            try:
                return list(reader)
            except csv.Error as exc:
                self.fail(f"{path} is not a valid CSV file: {exc}")

    def contaminated(self, relative: str) -> set[str]:
        return {row["eval_prompt"] for row in self.read_jsonl(relative, ["eval_prompt"])}

    def correctness(self, path: Path, row_no: int, column: str, value: str | None) -> float:
        text = (value or "").strip().lower()
        if text in _TRUE:
            return 1.0
        if text in _FALSE:
            return 0.0
        self.fail(f"{path} data row {row_no}: column {column!r} is {value!r}, expected True/False")


def _correctness_benchmark(layout: _Layout, csv_paths: list[Path], contaminated: set[str]) -> Benchmark:
    prompts: list[str] = []
    strong: list[float] = []
    weak: list[float] = []
    dropped = 0
    for path in csv_paths:
        rows = layout.read_csv(path, ["prompt", STRONG_MODEL, WEAK_MODEL])
        for row_no, row in enumerate(rows, start=1):
            if row["prompt"] is None:
                layout.fail(f"{path} data row {row_no} has no prompt")
            if row["prompt"] in contaminated:
                dropped += 1
                continue
            prompts.append(row["prompt"])
            strong.append(layout.correctness(path, row_no, STRONG_MODEL, row[STRONG_MODEL]))
            weak.append(layout.correctness(path, row_no, WEAK_MODEL, row[WEAK_MODEL]))
    if not prompts:
        layout.fail(f"no prompts left for {layout.name!r} after decontamination")
    return Benchmark(
        name=layout.name,
        prompts=prompts,
        strong_outcome=np.array(strong),
        weak_outcome=np.array(weak),
        weights=np.ones(len(prompts)),
        n_contaminated=dropped,
    )


def _load_mmlu(layout: _Layout) -> Benchmark:
    contaminated = layout.contaminated("routellm/mmlu/contaminated_prompts.jsonl")
    responses = layout.root / "routellm/mmlu/responses"
    paths = sorted(responses.glob("mmlu_*.csv")) if responses.is_dir() else []
    if not paths:
        layout.fail(f"no mmlu_<subject>.csv files in {responses}")
    return _correctness_benchmark(layout, paths, contaminated)


def _load_gsm8k(layout: _Layout) -> Benchmark:
    contaminated = layout.contaminated("routellm/gsm8k/contaminated_prompts.jsonl")
    path = layout.file("routellm/gsm8k/gsm8k_responses.csv")
    return _correctness_benchmark(layout, [path], contaminated)


def _load_mt_bench(layout: _Layout) -> Benchmark:
    contaminated = layout.contaminated("routellm/mt_bench/contaminated_prompts.jsonl")
    questions = layout.read_jsonl("routellm/mt_bench/question.jsonl", ["question_id", "turns"])
    judgements = layout.read_jsonl("routellm/mt_bench/judgements.jsonl", ["question_id", "model", "score"])

    kept = []
    for question in questions:
        turns = question["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            layout.fail(f"question {question['question_id']!r} has no list of turn strings")
        # RouteLLM drops a question when either turn is listed; routing uses the first turn.
        if not contaminated.intersection(turns[:2]):
            kept.append(question)
    if not kept:
        layout.fail("no MT-Bench questions left after decontamination")

    # Per (question, model): sum and count of judge scores over all judgement rows.
    sums: dict[tuple[Any, str], float] = {}
    counts: dict[tuple[Any, str], int] = {}
    for row in judgements:
        if row["model"] not in (STRONG_MODEL, WEAK_MODEL):
            continue
        try:
            score = float(row["score"])
        except (TypeError, ValueError):
            layout.fail(f"judgement score {row['score']!r} is not a number")
        key = (row["question_id"], row["model"])
        sums[key] = sums.get(key, 0.0) + score
        counts[key] = counts.get(key, 0) + 1

    outcome: dict[str, list[float]] = {STRONG_MODEL: [], WEAK_MODEL: []}
    rows: dict[str, list[int]] = {STRONG_MODEL: [], WEAK_MODEL: []}
    for question in kept:
        for model in (STRONG_MODEL, WEAK_MODEL):
            key = (question["question_id"], model)
            if key not in counts:
                layout.fail(f"question {key[0]!r} has no judgements for model {model!r}")
            outcome[model].append(sums[key] / counts[key])
            rows[model].append(counts[key])

    strong_rows = np.array(rows[STRONG_MODEL], dtype=np.float64)
    weak_rows = np.array(rows[WEAK_MODEL], dtype=np.float64)
    return Benchmark(
        name=layout.name,
        prompts=[question["turns"][0] for question in kept],
        strong_outcome=np.array(outcome[STRONG_MODEL]),
        weak_outcome=np.array(outcome[WEAK_MODEL]),
        weights=strong_rows,
        weak_weights=None if np.array_equal(strong_rows, weak_rows) else weak_rows,
        n_contaminated=len(questions) - len(kept),
        quality_label="mean judge score (1-10)",
    )
