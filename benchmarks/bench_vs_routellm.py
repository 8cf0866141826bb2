"""lmroute side by side with a RouteLLM-style server (FastAPI + torch, one forward pass per
request) serving the same BERT-router weights, both driven over HTTP by one load generator.

    python -m benchmarks.bench_vs_routellm [--seconds 10] [--concurrency 1 8 32]

lmroute's side is the gateway's routing path: POST /v1/route with model router-bert-0.5 ->
gateway -> Route RPC -> batcher -> ONNX, answering the decision as the baseline does (the
gateway still runs with stub backends, tests/fake_backend.py, but /v1/route does not call them).
The baseline needs `python -m export.pipeline` to have saved the BERT router in Hugging Face
format under .cache/export/bert_hf.
Writes benchmarks/results/vs_routellm.{json,md}.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from benchmarks.bench_service import (
    RESULTS,
    ROOT,
    bench_mix,
    bench_parser,
    free_port,
    machine,
    python_path,
    serve_args,
    summarize,
    write_results,
)


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": python_path()},
    )


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_http(url: str, payload: dict, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    async with aiohttp.ClientSession() as session:
        while time.time() < deadline:
            try:
                async with session.post(url, json=payload) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not come up")


async def closed_loop(url: str, make_body, prompts: list[str], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker():
            nonlocal errors
            while time.perf_counter() < deadline:
                i = next(counter)
                body = make_body(f"{prompts[i % len(prompts)]} #{i}")
                started = time.perf_counter()
                try:
                    async with session.post(url, json=body) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return summarize(latencies, errors, elapsed, concurrency)


def start_stub_backend(name: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    """tests/fake_backend.py as a process; returns it and its OpenAI-style base URL."""
    port_file = tmp / f"{name}.port"
    proc = start(["tests/fake_backend.py", "--name", name, "--port-file", str(port_file)])
    while not (port_file.exists() and port_file.read_text()):
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port_file.read_text()}/v1"


def start_router(router: str, rpc: int, metrics: int) -> subprocess.Popen:
    """`lmroute serve` with the cache off, so every request runs the model."""
    return start(serve_args(router, rpc, metrics))


def start_gateway(rpc: int, strong_url: str, weak_url: str, port: int) -> subprocess.Popen:
    """`lmroute gateway` with backend models named big (strong) and small (weak)."""
    return start(
        [
            "-m",
            "service.cli",
            "gateway",
            "--router-address",
            f"127.0.0.1:{rpc}",
            "--strong-model",
            "big",
            "--strong-url",
            strong_url,
            "--weak-model",
            "small",
            "--weak-url",
            weak_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    )


def run_baseline(weights: Path, prompts, concurrencies, seconds) -> list[dict]:
    port = free_port()
    proc = start(["-m", "benchmarks.routellm_style_server", "--weights", str(weights), "--port", str(port)])
    url = f"http://127.0.0.1:{port}/route"
    try:
        asyncio.run(wait_http(url, {"prompt": "ready?"}))
        return [
            asyncio.run(closed_loop(url, lambda p: {"prompt": p, "threshold": 0.5}, prompts, c, seconds))
            for c in concurrencies
        ]
    finally:
        stop(proc)


def run_lmroute(prompts, concurrencies, seconds, tmp: Path) -> list[dict]:
    rpc, metrics, gw = free_port(), free_port(), free_port()
    (strong, strong_url), (weak, weak_url) = (start_stub_backend(n, tmp) for n in ("strong", "weak"))
    backends = [strong, weak]
    server = start_router("bert", rpc, metrics)
    gateway = start_gateway(rpc, strong_url, weak_url, gw)
    url = f"http://127.0.0.1:{gw}/v1/route"  # the routing decision over HTTP, as the baseline answers

    def body(prompt: str) -> dict:
        return {"model": "router-bert-0.5", "messages": [{"role": "user", "content": prompt}]}

    try:
        time.sleep(1.0)
        asyncio.run(wait_http(url, body("ready?")))
        # the gateway answers with the fallback tier until the router is warm: wait for it
        time.sleep(3.0)
        return [asyncio.run(closed_loop(url, body, prompts, c, seconds)) for c in concurrencies]
    finally:
        stop(gateway, server, *backends)


def main(argv=None) -> int:
    p = bench_parser("bench_vs_routellm", __doc__, seconds=10.0)
    p.add_argument("--weights", type=Path, default=ROOT / ".cache" / "export" / "bert_hf")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = p.parse_args(argv)
    if not (args.weights / "head.pt").is_file():
        print(
            f"no HF-format BERT router at {args.weights}: run python -m export.pipeline first",
            file=sys.stderr,
        )
        return 2
    prompts = bench_mix(args.data, 1000)
    tmp = RESULTS / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    print("RouteLLM-style (FastAPI + torch, per request):", flush=True)
    baseline = run_baseline(args.weights, prompts, args.concurrency, args.seconds)
    print("lmroute gateway -> Route RPC -> ONNX:", flush=True)
    lmroute = run_lmroute(prompts, args.concurrency, args.seconds, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        f"# lmroute vs a RouteLLM-style server (bert router, HTTP, {args.seconds} s per point)",
        "",
        f"Machine: {machine()['cpu']}, {machine()['cores']} cores; load generator on the same cores.",
        "",
        "| concurrency | RouteLLM-style req/s | p50 ms | p99 ms | lmroute req/s | p50 ms | p99 ms | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b, ours in zip(baseline, lmroute, strict=True):
        lines.append(
            f"| {b['concurrency']} | {b['req_per_s']:.1f} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} | "
            f"{ours['req_per_s']:.1f} | {ours['p50_ms']:.1f} | {ours['p99_ms']:.1f} | "
            f"{ours['req_per_s'] / b['req_per_s']:.2f}x |"
        )
    report = {"machine": machine(), "seconds": args.seconds, "baseline": baseline, "lmroute": lmroute}
    write_results("vs_routellm", report, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
