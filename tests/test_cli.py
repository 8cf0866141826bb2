"""The `lmroute` command line, run as a real subprocess on the shipped artifacts."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
LINE = re.compile(r"^For (\d+\.\d)% strong model calls for (\w+), threshold = (\d\.\d{5})$")


def lmroute(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_calibrate_from_the_manifest_table(mf_router) -> None:
    result = lmroute("calibrate", "--routers", "mf", "bert", "--strong-model-pct", "0.5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [LINE.match(line).group(2) for line in lines] == ["mf", "bert"]
    assert LINE.match(lines[0]).group(1) == "50.0"
    expected = mf_router.manifest.raw["default_threshold"]
    assert float(LINE.match(lines[0]).group(3)) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_calibrate_on_a_prompts_file(tmp_path: Path, suffix: str, mf_router) -> None:
    prompts = [f"Question number {i}: explain topic {i * 7 % 13} in depth." for i in range(40)]
    path = tmp_path / f"prompts{suffix}"
    if suffix == ".txt":
        path.write_text("\n".join(prompts) + "\n")
    else:
        keys = ["prompt", "text"]
        path.write_text("".join(json.dumps({keys[i % 2]: p}) + "\n" for i, p in enumerate(prompts)))
    result = lmroute("calibrate", "--routers", "mf", "--strong-model-pct", "0.25", "--prompts", str(path))
    assert result.returncode == 0, result.stderr
    match = LINE.match(result.stdout.strip())
    threshold = float(match.group(3))
    scores = mf_router.score(prompts)
    assert (scores >= threshold - 1e-5).mean() == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize("pct", ["0", "1", "1.5", "-0.1", "nan"])
def test_calibrate_rejects_a_share_outside_the_open_interval(pct: str) -> None:
    result = lmroute("calibrate", "--routers", "mf", "--strong-model-pct", pct)
    assert result.returncode == 2
    assert "strong fraction must be in (0, 1)" in result.stderr


def test_unknown_router_lists_the_available_ones() -> None:
    result = lmroute("calibrate", "--routers", "nope", "--strong-model-pct", "0.5")
    assert result.returncode == 2
    assert "unknown router 'nope'" in result.stderr and "bert, mf, mf-fast, random" in result.stderr


def test_bad_prompts_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no prompt field"}\n')
    result = lmroute("calibrate", "--routers", "mf", "--strong-model-pct", "0.5", "--prompts", str(bad))
    assert result.returncode == 2 and "'prompt' or 'text' field" in result.stderr


def test_eval_with_a_missing_data_dir_names_the_layout(tmp_path: Path) -> None:
    result = lmroute(
        "eval",
        "--routers",
        "random",
        "--benchmark",
        "gsm8k",
        "--data",
        str(tmp_path / "nowhere"),
        "--output",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2
    assert "gsm8k_responses.csv" in result.stderr


def test_eval_end_to_end_on_a_small_benchmark(tmp_path: Path) -> None:
    base = tmp_path / "eval" / "routellm" / "gsm8k"
    base.mkdir(parents=True)
    hard = [
        f"Prove that the sequence a_n = n^{i} / {i + 2}^n converges and find its limit." for i in range(30)
    ]
    easy = [f"What is {i} plus one?" for i in range(30)]
    with (base / "gsm8k_responses.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prompt", WEAK, STRONG])
        writer.writerows([p, False, True] for p in hard)
        writer.writerows([p, True, True] for p in easy)
    (base / "contaminated_prompts.jsonl").write_text("")
    out = tmp_path / "out"
    args = (
        "eval",
        "--routers",
        "random",
        "mf",
        "bert",
        "--benchmark",
        "gsm8k",
        "--data",
        str(tmp_path / "eval"),
        "--output",
        str(out),
        "--random-seeds",
        "3",
    )
    result = lmroute(*args)
    assert result.returncode == 0, result.stderr
    assert "APGR" in result.stdout
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["router"] for r in rows} == {"random", "mf", "bert"}
    assert json.loads((out / "results.json").read_text())
    assert (out / "gsm8k.png").stat().st_size > 1000
    # a second run reads the cached scores and gives identical figures
    again = lmroute(*args)
    assert again.returncode == 0
    assert list(csv.DictReader((out / "results.csv").open())) == rows


def test_routers_lists_the_shipped_artifacts() -> None:
    result = lmroute("routers")
    assert result.returncode == 0
    assert "mf" in result.stdout and "gpt-4-1106-preview" in result.stdout


@pytest.mark.parametrize("router", ["mf", "random"])
def test_route_locally_with_a_strong_fraction(router: str) -> None:
    result = lmroute("route", "Prove that e is irrational.", "--router", router, "--strong-fraction", "0.3")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["router"] == router and decision["strong"] == (
        decision["strong_win_rate"] >= decision["threshold"]
    )
    if router == "random":
        assert decision["threshold"] == pytest.approx(0.7)
