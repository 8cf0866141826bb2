"""Gateway overhead: the gateway plus stub backends, against the Route RPC alone and the stub
backend alone, in one run.

    python -m benchmarks.bench_gateway_overhead [--seconds 8] [--concurrency 1 32]

Writes benchmarks/results/gateway_overhead.{json,md}. The gateway also reports its own time
before the backend call (lmroute_gateway_overhead_seconds); its mean is included.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.request

from benchmarks.bench_service import RESULTS, bench_mix, bench_parser, free_port, machine, write_results
from benchmarks.bench_service import closed_loop as grpc_loop
from benchmarks.bench_vs_routellm import closed_loop as http_loop
from benchmarks.bench_vs_routellm import start_gateway, start_router, start_stub_backend, stop, wait_http


def gateway_overhead_mean(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("lmroute_gateway_overhead_seconds_"):
            name, value = line.split(" ")
            values[name] = float(value)
    return values["lmroute_gateway_overhead_seconds_sum"] / max(
        values["lmroute_gateway_overhead_seconds_count"], 1
    )


def main(argv=None) -> int:
    p = bench_parser("bench_gateway_overhead", __doc__, seconds=8.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = p.parse_args(argv)
    prompts = bench_mix(args.data, 1000)
    tmp = RESULTS / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    rpc, metrics, gw = free_port(), free_port(), free_port()
    backend, backend_url = start_stub_backend("stub", tmp)
    server = start_router("mf", rpc, metrics)
    gateway = start_gateway(rpc, backend_url, backend_url, gw)
    chat_url = f"http://127.0.0.1:{gw}/v1/chat/completions"

    def routed(prompt: str) -> dict:
        return {"model": "router-mf-0.5", "messages": [{"role": "user", "content": prompt}]}

    def direct(prompt: str) -> dict:
        return {"model": "small", "messages": [{"role": "user", "content": prompt}]}

    rows = []
    try:
        asyncio.run(wait_http(chat_url, routed("ready?")))
        time.sleep(3.0)  # let the router warm up behind the gateway
        for c in args.concurrency:
            row = {"concurrency": c}
            row["route_rpc"] = asyncio.run(grpc_loop(rpc, "mf", prompts, c, args.seconds))
            row["backend_alone"] = asyncio.run(
                http_loop(f"{backend_url}/chat/completions", direct, prompts, c, args.seconds)
            )
            row["gateway_routed"] = asyncio.run(http_loop(chat_url, routed, prompts, c, args.seconds))
            rows.append(row)
        own = gateway_overhead_mean(gw)
    finally:
        stop(gateway, server, backend)
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        f"# Gateway overhead (mf, {args.seconds} s per point)",
        "",
        f"Machine: {machine()['cpu']}, {machine()['cores']} cores; every process shares them.",
        "",
        "| concurrency | Route RPC alone p50 / req/s | stub backend alone p50 / req/s "
        "| gateway routed p50 / req/s | p50 added by the gateway |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        a, b, g = r["route_rpc"], r["backend_alone"], r["gateway_routed"]
        added = g["p50_ms"] - a["p50_ms"] - b["p50_ms"]
        lines.append(
            f"| {r['concurrency']} | {a['p50_ms']:.1f} ms / {a['req_per_s']:.0f} | {b['p50_ms']:.1f} ms / "
            f"{b['req_per_s']:.0f} | {g['p50_ms']:.1f} ms / {g['req_per_s']:.0f} | {added:.1f} ms |"
        )
    lines += [
        "",
        f"Gateway's own time before the backend call (mean over every request, routing included): "
        f"{own * 1000:.2f} ms.",
    ]
    report = {"machine": machine(), "rows": rows, "gateway_overhead_mean_s": own}
    write_results("gateway_overhead", report, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
