"""The evaluation runner end to end with in-test routers on a small fake data directory."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from service.errors import DataLayoutError
from service.evaluation import (
    STRONG_MODEL,
    WEAK_MODEL,
    apgr,
    cpt,
    evaluate,
    format_table,
    load_benchmark,
    routing_curve,
)

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
N_GSM8K = 60
N_MT_BENCH = 20


def unit_hash(*parts: object) -> float:
    """A deterministic pseudo-random number in [0, 1) from its arguments."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


class FakeRouter:
    """Scores a prompt from a hash of its text; counts calls to score."""

    def __init__(self, name: str, artifact_hash: str = "hash-1", seed: int | None = None) -> None:
        self.name = name
        self.artifact_hash = artifact_hash
        self.default_pair = (STRONG_MODEL, WEAK_MODEL)
        self.seed = seed
        self.calls = 0
        self.pairs: list[tuple[str | None, str | None]] = []
        self.seeded: list[FakeRouter] = []

    def score(
        self,
        prompts: Sequence[str],
        strong_model: str | None = None,
        weak_model: str | None = None,
    ) -> np.ndarray:
        self.calls += 1
        self.pairs.append((strong_model, weak_model))
        return np.array([unit_hash(self.name, self.seed, p) for p in prompts])

    def with_seed(self, seed: int) -> FakeRouter:
        router = FakeRouter(self.name, self.artifact_hash, seed)
        self.seeded.append(router)
        return router


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """GSM8K and MT-Bench files in the RouteLLM layout, with outcomes drawn from a hash."""
    base = tmp_path / "eval" / "routellm"
    (base / "gsm8k").mkdir(parents=True)
    with (base / "gsm8k/gsm8k_responses.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", WEAK_MODEL, STRONG_MODEL])
        for i in range(N_GSM8K + 1):
            writer.writerow([f"problem {i}", unit_hash("w", i) < 0.5, unit_hash("s", i) < 0.8])
    contaminated = json.dumps({"eval_prompt": f"problem {N_GSM8K}"})
    (base / "gsm8k/contaminated_prompts.jsonl").write_text(contaminated + "\n")

    (base / "mt_bench").mkdir(parents=True)
    questions, judgements = [], []
    for qid in range(N_MT_BENCH):
        questions.append({"question_id": qid, "turns": [f"question {qid}", "follow up"]})
        for model, best in ((STRONG_MODEL, 10), (WEAK_MODEL, 8)):
            for turn in (1, 2):
                score = 1 + int(unit_hash(qid, model, turn) * best)
                judgements.append({"question_id": qid, "model": model, "turn": turn, "score": score})
    for name, rows in (("question", questions), ("judgements", judgements)):
        text = "".join(json.dumps(row) + "\n" for row in rows)
        (base / f"mt_bench/{name}.jsonl").write_text(text)
    (base / "mt_bench/contaminated_prompts.jsonl").write_text("")
    return tmp_path / "eval"


def run(data_dir: Path, out: Path, routers: dict[str, FakeRouter], **kwargs: object) -> list:
    kwargs.setdefault("progress", None)
    return evaluate(routers, ["gsm8k", "mt-bench"], data_dir, out, chunk_size=16, **kwargs)


def test_writes_csv_json_and_plots(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    routers = {"alpha": FakeRouter("alpha"), "beta": FakeRouter("beta")}
    results = run(data_dir, out, routers)

    assert [(r.benchmark, r.router) for r in results] == [
        ("gsm8k", "alpha"),
        ("gsm8k", "beta"),
        ("mt-bench", "alpha"),
        ("mt-bench", "beta"),
    ]
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert {"benchmark", "router", "apgr", "cpt50", "cpt80", "apgr_sd", "n_prompts"} <= set(rows[0])
    assert "curve" not in rows[0]
    assert rows[0]["n_prompts"] == str(N_GSM8K)
    assert float(rows[0]["apgr"]) == pytest.approx(results[0].apgr)

    payload = json.loads((out / "results.json").read_text())
    assert payload["num_results"] == 10
    assert payload["benchmarks"]["gsm8k"]["n_contaminated"] == 1
    first = payload["results"][0]
    assert len(first["curve"]["strong_pct"]) == 11
    assert first["curve"]["strong_pct"][0] == 100.0 and first["curve"]["strong_pct"][-1] == 0.0

    if HAS_MATPLOTLIB:
        for name in ("gsm8k", "mt-bench"):
            assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_match_a_direct_computation(data_dir: Path, tmp_path: Path) -> None:
    router = FakeRouter("alpha")
    result = run(data_dir, tmp_path / "out", {"alpha": router}, plot=False)[1]
    bench = load_benchmark("mt-bench", data_dir)
    scores = np.array([unit_hash("alpha", None, p) for p in bench.prompts])
    curve = routing_curve(scores, bench.strong_outcome, bench.weak_outcome, weights=bench.weights)
    assert result.benchmark == "mt-bench"
    assert result.apgr == pytest.approx(apgr(curve))
    assert result.cpt50 == pytest.approx(cpt(curve, 0.5))
    assert result.cpt80 == pytest.approx(cpt(curve, 0.8))
    assert result.apgr_sd == 0.0 and result.n_seeds == 1
    assert result.n_prompts == N_MT_BENCH


def test_passes_the_benchmark_model_names_and_chunks(data_dir: Path, tmp_path: Path) -> None:
    router = FakeRouter("alpha")
    seen: list[tuple[str, int, int]] = []
    run(
        data_dir,
        tmp_path / "out",
        {"alpha": router},
        plot=False,
        progress=lambda *a: seen.append(a),
    )
    assert set(router.pairs) == {(STRONG_MODEL, WEAK_MODEL)}
    # 60 GSM8K prompts in chunks of 16 -> 4 calls; 20 MT-Bench prompts -> 2 calls.
    assert router.calls == 6
    assert seen[3] == ("gsm8k / alpha", N_GSM8K, N_GSM8K)
    assert seen[-1] == ("mt-bench / alpha", N_MT_BENCH, N_MT_BENCH)


def test_scores_are_cached_per_artifact_hash(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    router = FakeRouter("alpha")
    first = run(data_dir, out, {"alpha": router}, plot=False)
    calls = router.calls
    assert len(list((out / "cache").glob("*.npy"))) == 2

    second = run(data_dir, out, {"alpha": router}, plot=False)
    assert router.calls == calls  # served from the cache
    assert [r.apgr for r in second] == [r.apgr for r in first]

    retrained = FakeRouter("alpha", artifact_hash="hash-2")
    run(data_dir, out, {"alpha": retrained}, plot=False)
    assert retrained.calls == calls  # a new hash scores again
    assert len(list((out / "cache").glob("*.npy"))) == 4
    assert not list((out / "cache").glob("*.tmp"))  # atomic writes leave no temporaries

    for path in (out / "cache").glob("*.npy"):
        path.write_bytes(b"truncated")
    run(data_dir, out, {"alpha": router}, plot=False)
    assert router.calls == 2 * calls  # unreadable cache files are scored again


def test_random_router_is_averaged_over_seeds(data_dir: Path, tmp_path: Path) -> None:
    router = FakeRouter("random")
    results = run(data_dir, tmp_path / "out", {"random": router}, random_seeds=4, plot=False)
    assert [r.seed for r in router.seeded[:4]] == [0, 1, 2, 3]
    assert router.calls == 0  # only the seeded copies score

    bench = load_benchmark("gsm8k", data_dir)
    per_seed = [
        apgr(
            routing_curve(
                [unit_hash("random", seed, p) for p in bench.prompts],
                bench.strong_outcome,
                bench.weak_outcome,
            )
        )
        for seed in range(4)
    ]
    gsm8k = results[0]
    assert gsm8k.n_seeds == 4
    assert gsm8k.apgr == pytest.approx(np.mean(per_seed))
    assert gsm8k.apgr_sd == pytest.approx(np.std(per_seed, ddof=1))
    assert gsm8k.apgr_sd > 0


def test_format_table(data_dir: Path, tmp_path: Path) -> None:
    routers = {"alpha": FakeRouter("alpha"), "random": FakeRouter("random")}
    results = run(data_dir, tmp_path / "out", routers, random_seeds=2, plot=False)
    lines = format_table(results).splitlines()
    assert lines[0].split() == ["benchmark", "router", "APGR", "CPT(50%)", "CPT(80%)", "n"]
    assert set(lines[1]) == {"-"}
    assert len(lines) == 2 + len(results)
    assert "±" in lines[3] and "±" not in lines[2]  # sd shown for the seeded router only
    assert lines[2].split()[:2] == ["gsm8k", "alpha"]
    assert lines[2].endswith(str(N_GSM8K))


def test_bad_inputs_fail_before_scoring(data_dir: Path, tmp_path: Path) -> None:
    router = FakeRouter("alpha")
    with pytest.raises(ValueError, match="unknown or no benchmarks"):
        evaluate({"alpha": router}, ["hellaswag"], data_dir, tmp_path / "out")
    (data_dir / "routellm/mt_bench/question.jsonl").unlink()
    with pytest.raises(DataLayoutError, match=re.escape("routellm/mt_bench/question.jsonl")):
        run(data_dir, tmp_path / "out", {"alpha": router})
    assert router.calls == 0


def test_router_with_wrong_output_shape(data_dir: Path, tmp_path: Path) -> None:
    class Broken(FakeRouter):
        def score(
            self,
            prompts: Sequence[str],
            strong_model: str | None = None,
            weak_model: str | None = None,
        ) -> np.ndarray:
            return np.zeros(len(prompts) + 1)

    with pytest.raises(ValueError, match="returned scores of shape"):
        run(data_dir, tmp_path / "out", {"broken": Broken("broken")})


def test_missing_matplotlib_skips_plots_with_a_warning(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match=re.escape("pip install lmroute[eval]")):
        run(data_dir, out, {"alpha": FakeRouter("alpha")})
    assert (out / "results.csv").is_file()
    assert not list(out.glob("*.png"))
