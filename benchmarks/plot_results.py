"""Latency against throughput for every measured variant, from benchmarks/results/*.json.

python -m benchmarks.plot_results   # writes benchmarks/results/latency_vs_throughput.png
                                    # (and gpu_latency_vs_throughput.png from gpu_*.json)
"""

from __future__ import annotations

import json

from benchmarks.bench_service import RESULTS


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict]] = {}
    service = RESULTS / "service_mf.json"
    if service.is_file():
        data = json.loads(service.read_text())
        series["lmroute gRPC, mf, default (probed batch cap)"] = data["service"]
        if data.get("batching_forced"):
            series["lmroute gRPC, mf, batching forced on"] = data["batching_forced"]
        series["lmroute gRPC, mf, batching off"] = data["batching_off"]
        if data.get("one_instance"):
            series["lmroute gRPC, mf, one model instance"] = data["one_instance"]
        if data.get("open_loop"):
            series["lmroute gRPC, mf, open loop"] = data["open_loop"]
    versus = RESULTS / "vs_routellm.json"
    if versus.is_file():
        data = json.loads(versus.read_text())
        series["RouteLLM-style FastAPI+torch, bert (HTTP)"] = data["baseline"]
        series["lmroute gateway, bert (HTTP)"] = data["lmroute"]
    plot(
        plt,
        series,
        "req_per_s",
        "throughput (requests/s)",
        "Latency vs throughput, 2-core CPU (c = closed-loop concurrency, n/s = open-loop rate)",
        "latency_vs_throughput.png",
    )
    gpu: dict[str, list[dict]] = {}
    for path in sorted(RESULTS.glob("gpu_*.json")):
        data = json.loads(path.read_text())
        for run in data["service"]:
            for per_rpc in sorted({r["prompts_per_rpc"] for r in run["rows"]}):
                rows = [r for r in run["rows"] if r["prompts_per_rpc"] == per_rpc]
                rpc = "Route" if per_rpc == 1 else f"RouteBatch of {per_rpc}"
                gpu[f"{data['router']}, {run['workers']} worker(s), {rpc}"] = rows
    if gpu:
        plot(
            plt,
            gpu,
            "routes_per_s",
            "throughput (routes/s)",
            "Latency (per RPC) vs throughput, one H100 (c = RPCs in flight)",
            "gpu_latency_vs_throughput.png",
        )
    return 0


def plot(plt, series: dict[str, list[dict]], rate: str, xlabel: str, title: str, name: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key in zip(axes, ("p50_ms", "p99_ms"), strict=True):
        for label, rows in series.items():
            rows = sorted(rows, key=lambda r: r.get("concurrency", r.get("offered_per_s", 0)))
            ax.plot([r[rate] for r in rows], [r[key] for r in rows], marker="o", label=label)
            for r in rows:
                ax.annotate(
                    f"c={r['concurrency']}" if "concurrency" in r else f"{r['offered_per_s']:.0f}/s",
                    (r[rate], r[key]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 3),
                )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{key[:3]} latency (ms)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out = RESULTS / name
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
