"""Throughput of lmroute on a GPU (onnxruntime-gpu, CUDA provider), all figures in one run.

    python -m benchmarks.bench_gpu [--router mf] [--seconds 10] [--data ../shared/data/eval]

- raw: the CUDA session in-process, no server, on the bench mix: tokenization alone, the model
  alone on pre-tokenized batches, and both together, at several batch sizes;
- service: `lmroute serve` on the CUDA provider (the GPU batching config in
  benchmarks/gpu_config.yaml), driven by several load-generator processes so that the client
  is not the bottleneck: `Route` (one prompt per RPC) and `RouteBatch` (many per RPC).

Writes benchmarks/results/gpu_<router>.{json,md}. Needs onnxruntime-gpu (the `gpu` extra).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import subprocess
import time

import grpc
import numpy as np
import onnxruntime

from benchmarks.bench_service import ROOT, Server, bench_mix, bench_parser, machine, summarize, write_results
from service.grpc.gen.lmroute.v1 import router_pb2 as pb
from service.grpc.gen.lmroute.v1 import router_pb2_grpc
from service.routers import SessionOptions, load_router
from service.routers.session import CPU, CUDA

GPU_CONFIG = ROOT / "benchmarks" / "gpu_config.yaml"


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def raw_gpu(router_name: str, prompts: list[str], batch_sizes: list[int]) -> dict:
    """prompts/s of tokenization, the CUDA session alone and both, per batch size (length-sorted
    batches: what the service's batcher forms under load)."""
    router = load_router(router_name, session_options=SessionOptions(providers=(CUDA, CPU)))
    provider = router.provider
    by_length = [p for _, p in sorted(zip(router.tokenizer.lengths(prompts), prompts, strict=True))]
    session = router.sessions[0]
    outputs = [o.name for o in session.get_outputs()]
    rows = []
    for size in batch_sizes:
        batches = [by_length[i : i + size] for i in range(0, len(by_length), size)]
        for batch in batches[:3]:
            router.run_rows(batch)  # warm-up: cuDNN/cuBLAS choices per shape
        started = time.perf_counter()
        feeds = [router.tokenizer(b) for b in batches]
        tokenize = time.perf_counter() - started
        started = time.perf_counter()
        for ids, mask in feeds:
            session.run(outputs, {"input_ids": ids, "attention_mask": mask})
        model = time.perf_counter() - started
        started = time.perf_counter()
        for batch in batches:
            router.run_rows(batch)
        both = time.perf_counter() - started
        row = {
            "batch": size,
            "tokenize_per_s": len(prompts) / tokenize,
            "model_per_s": len(prompts) / model,
            "end_to_end_per_s": len(prompts) / both,
        }
        rows.append(row)
        print(
            f"  raw batch {size:5d}: tokenize {row['tokenize_per_s']:9.0f}/s"
            f"  model {row['model_per_s']:9.0f}/s  both {row['end_to_end_per_s']:9.0f}/s",
            flush=True,
        )
    single = []
    for p in prompts[:200]:
        started = time.perf_counter()
        router.run_rows([p])
        single.append(time.perf_counter() - started)
    return {"provider": provider, "rows": rows, "single_prompt_ms": float(np.median(single) * 1000)}


async def _client_loop(
    port: int,
    router: str,
    prompts: list[str],
    concurrency: int,
    per_rpc: int,
    seconds: float,
    offset: int,
    channels: int,
) -> tuple[list[float], int, float]:
    """`concurrency` RPCs in flight over `channels` connections (with `serve --workers`, the
    kernel spreads connections, not calls, over the workers)."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(offset, 10**12))
    deadline = time.perf_counter() + seconds
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    # a local subchannel pool and a distinct argument: one TCP connection per channel
    pool = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[*options, ("grpc.use_local_subchannel_pool", 1), ("bench.k", k)]
        )
        for k in range(channels)
    ]
    stubs = [router_pb2_grpc.RouterStub(channel) for channel in pool]

    def request(i: int) -> pb.RouteRequest:
        # a unique suffix defeats any cache; the text stays a bench-mix prompt
        return pb.RouteRequest(prompt=f"{prompts[i % len(prompts)]} #{i}", router=router)

    async def worker(stub):
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                if per_rpc == 1:
                    await stub.Route(request(next(counter)), timeout=60)
                else:
                    batch = [request(next(counter)) for _ in range(per_rpc)]
                    await stub.RouteBatch(pb.RouteBatchRequest(requests=batch), timeout=60)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(stubs[k % channels]) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    for channel in pool:
        await channel.close()
    return latencies, errors, elapsed


def _client_process(args: tuple) -> tuple[list[float], int, float]:
    return asyncio.run(_client_loop(*args))


def drive(
    port: int, router: str, prompts: list[str], processes: int, concurrency: int, per_rpc: int, seconds: float
) -> dict:
    """`processes` load generators, each with `concurrency` RPCs in flight of `per_rpc` prompts."""
    jobs = [
        (port, router, prompts, concurrency, per_rpc, seconds, k * 10**9, min(concurrency, 8))
        for k in range(processes)
    ]
    with mp.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_client_process, jobs)
    latencies = [x for lat, _, _ in results for x in lat]
    errors = sum(e for _, e, _ in results)
    elapsed = max(t for _, _, t in results)
    row = summarize(latencies, errors, elapsed, processes * concurrency)
    row["routes_per_s"] = row.pop("req_per_s") * per_rpc
    row["rpcs_per_s"] = row["routes_per_s"] / per_rpc
    row["prompts_per_rpc"] = per_rpc
    row["client_processes"] = processes
    return row


def service_gpu(
    router: str, prompts: list[str], seconds: float, workers: int, instances: int, loads: list[tuple]
) -> dict:
    server = Server(router, max_batch_size=None, instances=instances, config=GPU_CONFIG, workers=workers)
    cap = int(server.metric("lmroute_max_batch_size"))
    rows = []
    try:
        for processes, concurrency, per_rpc in loads:
            s0, n0 = server.batch_stats()
            cpu0, t0 = server.cpu_seconds(), time.perf_counter()
            row = drive(server.port, router, prompts, processes, concurrency, per_rpc, seconds)
            s1, n1 = server.batch_stats()
            row["mean_batch"] = (s1 - s0) / max(n1 - n0, 1)
            row["server_cpu_cores"] = (server.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
            row["workers"] = workers
            row["instances"] = int(server.metric("lmroute_model_instances"))
            row["batch_cap_in_use"] = cap
            rows.append(row)
            print(
                f"  workers={workers} instances={row['instances']} {processes}x{concurrency} clients, "
                f"{per_rpc:3d}/RPC: "
                f"{row['routes_per_s']:8.0f} routes/s  p50 {row['p50_ms']:6.1f} ms"
                f"  p99 {row['p99_ms']:6.1f} ms"
                f"  mean batch {row['mean_batch']:6.1f}  server CPU {row['server_cpu_cores']:.1f} cores"
                f"  errors {row['errors']}",
                flush=True,
            )
    finally:
        server.stop()
    return {"workers": workers, "instances_per_worker": instances, "rows": rows}


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# GPU benchmark ({report['router']}, bench mix, {report['seconds']} s per point)",
        "",
        f"GPU: {m.get('gpu') or 'none found'}; CPU: {m['cpu']} ({m['cores']} cores); onnxruntime "
        f"{m['onnxruntime']}; provider in use: {report['raw']['provider']}.",
        "",
        "## Raw, in-process (no server), length-sorted batches",
        "",
        "| batch | tokenize prompts/s | model prompts/s | both prompts/s |",
        "|---|---|---|---|",
    ]
    for r in report["raw"]["rows"]:
        lines.append(
            f"| {r['batch']} | {r['tokenize_per_s']:.0f} | {r['model_per_s']:.0f} "
            f"| {r['end_to_end_per_s']:.0f} |"
        )
    lines += [
        "",
        f"Single prompt, end to end: {report['raw']['single_prompt_ms']:.2f} ms (median of 200).",
        "",
        "## Service (`lmroute serve`, CUDA provider, benchmarks/gpu_config.yaml)",
        "",
        "The load-generator processes run on the same machine's cores as the server.",
        "",
        "| workers | model instances (all workers) | clients (processes x in flight) | prompts per RPC "
        "| routes/s | p50 ms | p99 ms | mean batch | server CPU cores | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["service"]:
        for r in run["rows"]:
            lines.append(
                f"| {r['workers']} | {r['instances']} "
                f"| {r['client_processes']} x {r['concurrency'] // r['client_processes']} "
                f"| {r['prompts_per_rpc']} | {r['routes_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {r['mean_batch']:.1f} | {r['server_cpu_cores']:.1f} | {r['errors']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = bench_parser("bench_gpu", __doc__, seconds=8.0)
    p.add_argument("--router", default="mf", choices=["mf", "bert", "mf-fast"])
    p.add_argument("--prompts", type=int, default=4000)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32, 128, 256, 512, 1024])
    p.add_argument(
        "--layouts",
        nargs="+",
        default=["1x1", "1x2", "4x1", "8x1"],
        help="server layouts WORKERSxINSTANCES (model sessions per worker)",
    )
    p.add_argument("--clients", type=int, default=8, help="load-generator processes")
    p.add_argument("--skip-service", action="store_true")
    args = p.parse_args(argv)
    if CUDA not in onnxruntime.get_available_providers():
        raise SystemExit(
            f"this onnxruntime ({onnxruntime.__version__}) has no CUDA provider: pip install '.[gpu]'"
        )
    prompts = bench_mix(args.data, args.prompts)
    report = {
        "router": args.router,
        "seconds": args.seconds,
        "machine": {**machine(), "gpu": gpu_name()},
        "raw": raw_gpu(args.router, prompts, args.batch),
        "service": [],
    }
    # (processes, RPCs in flight each, prompts per RPC)
    loads = [(args.clients, 16, 1), (args.clients, 64, 1), (args.clients, 4, 64), (args.clients, 8, 128)]
    if not args.skip_service:
        for layout in args.layouts:
            workers, instances = (int(x) for x in layout.split("x"))
            report["service"].append(
                service_gpu(args.router, prompts, args.seconds, workers, instances, loads)
            )
    write_results(f"gpu_{args.router}", report, to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
