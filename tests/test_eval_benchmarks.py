"""Benchmark loaders on a tiny fake data directory in the RouteLLM layout (and the real one)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from service.errors import DataLayoutError
from service.evaluation.benchmarks import (
    BENCHMARKS,
    STRONG_MODEL,
    WEAK_MODEL,
    load_benchmark,
    oracle_curve,
    resolve_benchmarks,
)

REAL_DATA = Path(__file__).parents[1] / ".." / "shared" / "data" / "eval"

TRICKY_PROMPT = 'Which is "right"?\nA. one, two\nB. "three"\nAnswer:'


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def judgement(question_id: int, model: str, turn: int, score: float) -> dict:
    return {"question_id": question_id, "model": model, "turn": turn, "score": score}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    base = tmp_path / "eval" / "routellm"
    header = ["prompt", STRONG_MODEL, WEAK_MODEL]
    write_csv(
        base / "mmlu/responses/mmlu_algebra.csv",
        header,
        [["What is 1+1?", True, False], [TRICKY_PROMPT, True, True], ["leaked", False, True]],
    )
    write_csv(
        base / "mmlu/responses/mmlu_anatomy.csv",
        header,
        [["Where is the heart?", False, False], ["What is 1+1?", True, False]],
    )
    write_jsonl(
        base / "mmlu/contaminated_prompts.jsonl",
        [{"train_prompt": "leaked?", "eval_prompt": "leaked", "similarity": 0.99}],
    )

    gsm_header = [
        "prompt",
        WEAK_MODEL,
        STRONG_MODEL,
        f"{WEAK_MODEL}_response",
        f"{STRONG_MODEL}_response",
    ]
    write_csv(
        base / "gsm8k/gsm8k_responses.csv",
        gsm_header,
        [
            ["Janet has 3 ducks.", False, True, "4", "3"],
            ["Tom has 2 cats.", True, True, "2", "2"],
            ["Copied problem.", True, False, "1", "0"],
            ["Sue has 5 pens.", False, False, "9", "8"],
        ],
    )
    write_jsonl(base / "gsm8k/contaminated_prompts.jsonl", [{"eval_prompt": "Copied problem."}])

    write_jsonl(
        base / "mt_bench/question.jsonl",
        [
            {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorter."]},
            {"question_id": 82, "category": "math", "turns": ["Solve x+1=2.", "Now x+2=5."]},
            {"question_id": 83, "category": "coding", "turns": ["Leaked task.", "More."]},
        ],
    )
    write_jsonl(
        base / "mt_bench/judgements.jsonl",
        [
            judgement(81, STRONG_MODEL, 1, 9),
            judgement(81, STRONG_MODEL, 2, 8),
            judgement(81, WEAK_MODEL, 1, 6),
            judgement(81, WEAK_MODEL, 2, 4),
            judgement(82, STRONG_MODEL, 1, 10),
            judgement(82, STRONG_MODEL, 2, 10),
            judgement(82, WEAK_MODEL, 1, 3),
            judgement(82, WEAK_MODEL, 2, 7),
            judgement(83, STRONG_MODEL, 1, 1),
            judgement(83, WEAK_MODEL, 1, 1),
            judgement(81, "some-other-model", 1, 1),
        ],
    )
    write_jsonl(base / "mt_bench/contaminated_prompts.jsonl", [{"eval_prompt": "Leaked task."}])
    return tmp_path / "eval"


def test_mmlu_concatenates_subjects_and_decontaminates(data_dir: Path) -> None:
    bench = load_benchmark("mmlu", data_dir)
    # Subjects in file-name order; duplicates across subjects are kept, as in RouteLLM.
    assert bench.prompts == [
        "What is 1+1?",
        TRICKY_PROMPT,
        "Where is the heart?",
        "What is 1+1?",
    ]
    np.testing.assert_array_equal(bench.strong_outcome, [1, 1, 0, 1])
    np.testing.assert_array_equal(bench.weak_outcome, [0, 1, 0, 0])
    np.testing.assert_array_equal(bench.weights, np.ones(4))
    assert bench.weak_weights is None
    assert bench.n_contaminated == 1
    assert (bench.strong_model, bench.weak_model) == (STRONG_MODEL, WEAK_MODEL)


def test_gsm8k_reads_columns_by_name(data_dir: Path) -> None:
    bench = load_benchmark("gsm8k", data_dir)
    assert bench.prompts == ["Janet has 3 ducks.", "Tom has 2 cats.", "Sue has 5 pens."]
    np.testing.assert_array_equal(bench.strong_outcome, [1, 1, 0])
    np.testing.assert_array_equal(bench.weak_outcome, [0, 1, 0])
    assert bench.n_contaminated == 1
    assert len(bench) == 3


def test_mt_bench_routes_on_first_turn_and_averages_rows(data_dir: Path) -> None:
    bench = load_benchmark("mt-bench", data_dir)
    assert bench.prompts == ["Write a poem.", "Solve x+1=2."]
    np.testing.assert_allclose(bench.strong_outcome, [8.5, 10.0])
    np.testing.assert_allclose(bench.weak_outcome, [5.0, 5.0])
    np.testing.assert_array_equal(bench.weights, [2, 2])
    assert bench.weak_weights is None
    assert bench.n_contaminated == 1


def test_mt_bench_uneven_judgement_counts_give_weak_weights(data_dir: Path) -> None:
    path = data_dir / "routellm/mt_bench/judgements.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows = [r for r in rows if not (r["question_id"] == 82 and r["model"] == WEAK_MODEL)]
    rows.append(judgement(82, WEAK_MODEL, 1, 3))
    write_jsonl(path, rows)
    bench = load_benchmark("mt-bench", data_dir)
    np.testing.assert_array_equal(bench.weights, [2, 2])
    np.testing.assert_array_equal(bench.weak_weights, [2, 1])
    np.testing.assert_allclose(bench.weak_outcome, [5.0, 3.0])


def test_oracle_curve_of_a_benchmark(data_dir: Path) -> None:
    x, y = oracle_curve(load_benchmark("mmlu", data_dir))
    # Strong strictly wins on prompts 0 and 3 of 4.
    np.testing.assert_allclose(x, [0, 25, 50, 100])
    np.testing.assert_allclose(y, [0.25, 0.5, 0.75, 0.75])


def test_resolve_benchmarks() -> None:
    assert resolve_benchmarks("all") == list(BENCHMARKS)
    assert resolve_benchmarks("mmlu") == ["mmlu"]
    assert resolve_benchmarks("gsm8k, mt-bench") == ["gsm8k", "mt-bench"]
    with pytest.raises(ValueError, match="unknown benchmark 'hellaswag'"):
        resolve_benchmarks("hellaswag")
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("hellaswag", ".")


# --- malformed layouts ----------------------------------------------------------------------


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataLayoutError) as info:
        load_benchmark("gsm8k", tmp_path / "nowhere")
    message = str(info.value)
    assert "does not exist" in message
    assert "routellm/gsm8k/gsm8k_responses.csv" in message
    assert "routellm/gsm8k/contaminated_prompts.jsonl" in message


@pytest.mark.parametrize(
    ("name", "relative"),
    [
        ("gsm8k", "routellm/gsm8k/gsm8k_responses.csv"),
        ("gsm8k", "routellm/gsm8k/contaminated_prompts.jsonl"),
        ("mt-bench", "routellm/mt_bench/question.jsonl"),
        ("mt-bench", "routellm/mt_bench/judgements.jsonl"),
        ("mmlu", "routellm/mmlu/contaminated_prompts.jsonl"),
    ],
)
def test_missing_file(data_dir: Path, name: str, relative: str) -> None:
    (data_dir / relative).unlink()
    with pytest.raises(DataLayoutError, match="missing file") as info:
        load_benchmark(name, data_dir)
    assert relative in str(info.value)


def test_missing_mmlu_subjects(data_dir: Path) -> None:
    for path in (data_dir / "routellm/mmlu/responses").glob("*.csv"):
        path.unlink()
    with pytest.raises(DataLayoutError, match=re.escape("routellm/mmlu/responses/mmlu_<subject>.csv")):
        load_benchmark("mmlu", data_dir)


def test_missing_column(data_dir: Path) -> None:
    write_csv(data_dir / "routellm/gsm8k/gsm8k_responses.csv", ["prompt", WEAK_MODEL], [["q", True]])
    with pytest.raises(DataLayoutError, match=re.escape(f"lacks column(s) {STRONG_MODEL}")) as info:
        load_benchmark("gsm8k", data_dir)
    assert "expected layout for 'gsm8k'" in str(info.value)


def test_bad_correctness_value(data_dir: Path) -> None:
    write_csv(
        data_dir / "routellm/mmlu/responses/mmlu_anatomy.csv",
        ["prompt", STRONG_MODEL, WEAK_MODEL],
        [["q", "maybe", True]],
    )
    with pytest.raises(DataLayoutError, match="expected True/False"):
        load_benchmark("mmlu", data_dir)


def test_missing_field_and_bad_json(data_dir: Path) -> None:
    path = data_dir / "routellm/mt_bench/contaminated_prompts.jsonl"
    write_jsonl(path, [{"train_prompt": "x"}])
    with pytest.raises(DataLayoutError, match="lacks field\\(s\\) eval_prompt"):
        load_benchmark("mt-bench", data_dir)
    path.write_text("{not json\n")
    with pytest.raises(DataLayoutError, match="not valid JSON"):
        load_benchmark("mt-bench", data_dir)


def test_question_without_judgements(data_dir: Path) -> None:
    path = data_dir / "routellm/mt_bench/judgements.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    write_jsonl(path, [r for r in rows if r["question_id"] != 82 or r["model"] != WEAK_MODEL])
    with pytest.raises(
        DataLayoutError, match=re.escape(f"question 82 has no judgements for model '{WEAK_MODEL}'")
    ):
        load_benchmark("mt-bench", data_dir)


# --- the real data --------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="real eval data not found at ../shared/data/eval")
def test_real_benchmarks_decontaminated_counts() -> None:
    expected = {"mt-bench": (72, 8), "mmlu": (14_037, 5), "gsm8k": (1_307, 12)}
    for name, (count, dropped) in expected.items():
        bench = load_benchmark(name, REAL_DATA)
        assert (len(bench), bench.n_contaminated) == (count, dropped), name
        assert bench.strong_outcome.mean() > bench.weak_outcome.mean()
    mt_bench = load_benchmark("mt-bench", REAL_DATA)
    # Every question has both turns judged for both models.
    np.testing.assert_array_equal(mt_bench.weights, np.full(72, 2.0))
    assert mt_bench.weak_weights is None
