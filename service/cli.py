"""The `lmroute` command line: eval, calibrate, routers (serve and route come with the service)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from service.errors import LmrouteError, UnknownRouterError
from service.logging_setup import LEVELS, configure_logging
from service.policy.calibration import (
    check_strong_fraction,
    threshold_for_fraction,
    threshold_from_scores,
)
from service.routers import ROUTER_NAMES, RandomRouter, default_artifact_dir, load_router
from service.routers.session import SessionOptions


def _session_options(args: argparse.Namespace) -> SessionOptions:
    providers = tuple(args.providers.split(",")) if args.providers else SessionOptions().providers
    return SessionOptions(providers=providers, intra_op_threads=args.threads)


def _artifact_dir(args: argparse.Namespace, name: str) -> Path | None:
    return Path(args.models_dir) / name if args.models_dir else None


def _check_router_names(names: Sequence[str]) -> None:
    for name in names:
        if name not in ROUTER_NAMES:
            raise UnknownRouterError(name, list(ROUTER_NAMES))


def read_prompts(path: Path) -> list[str]:
    """One prompt a line (.txt), or a `prompt` / `text` field per line (.jsonl)."""
    if not path.is_file():
        raise LmrouteError(f"prompts file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LmrouteError(f"{path}:{number}: not JSON: {exc}") from exc
            text = row.get("prompt", row.get("text")) if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise LmrouteError(f"{path}:{number}: needs a string 'prompt' or 'text' field")
            prompts.append(text)
    else:
        prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise LmrouteError(f"{path}: no prompts")
    return prompts


def cmd_eval(args: argparse.Namespace) -> int:
    from service.evaluation import evaluate, format_table, resolve_benchmarks

    _check_router_names(args.routers)
    benchmarks = resolve_benchmarks(args.benchmark)
    options = _session_options(args)
    routers = {name: load_router(name, _artifact_dir(args, name), options, seed=0) for name in args.routers}
    results = evaluate(
        routers, benchmarks, Path(args.data), Path(args.output), random_seeds=args.random_seeds
    )
    print(format_table(results))
    print(f"\nwrote {args.output}/results.csv, results.json and a PNG per benchmark")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    _check_router_names(args.routers)
    fraction = check_strong_fraction(args.strong_model_pct)
    prompts = read_prompts(Path(args.prompts)) if args.prompts else None
    for name in args.routers:
        if prompts is None and name == "random":
            threshold = 1.0 - fraction  # uniform scores
        elif prompts is None:
            from service.routers.manifest import load_manifest

            manifest = load_manifest(_artifact_dir(args, name) or default_artifact_dir(name))
            threshold = threshold_for_fraction(manifest.calibration, fraction)
        else:
            router = load_router(name, _artifact_dir(args, name), _session_options(args), seed=0)
            threshold = threshold_from_scores(router.score(prompts), fraction)
        print(f"For {fraction * 100:.1f}% strong model calls for {name}, threshold = {threshold:.5f}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gRPC service until SIGTERM/SIGINT; exits 0 after a graceful shutdown."""
    import dataclasses

    from service.config import load_config
    from service.event_loop import run_on_event_loop
    from service.grpc.server import serve_until_signalled

    config = load_config(args.config)
    if args.routers:
        known = {r.name: r for r in config.routers}
        from service.config import RouterConfig

        config.routers = [known.get(name, RouterConfig(name)) for name in args.routers]
    server_cfg = config.server
    for key in ("host", "port", "metrics_port", "workers"):
        if getattr(args, key) is not None:
            server_cfg = dataclasses.replace(server_cfg, **{key: getattr(args, key)})
    config.server = server_cfg
    if args.models_dir:
        config.models_dir = args.models_dir
    if args.threads:
        config.runtime.intra_op_threads = args.threads
    if args.instances is not None:
        config.runtime.instances = args.instances
    if args.providers:
        config.runtime.providers = args.providers.split(",")
    if args.max_batch_size:
        config.batching.max_batch_size = args.max_batch_size
    if args.no_batch_probe:
        config.batching.probe_batch_size = False
    if args.cache_size is not None:
        config.cache_size = args.cache_size
    config.log_level = args.log_level or config.log_level
    config.validate()
    configure_logging(config.log_level, sys.stdout)  # the service logs JSON on stdout
    if config.server.workers > 1:
        from service.workers import serve_workers

        return serve_workers(config)

    run_on_event_loop(serve_until_signalled(config), config.runtime.event_loop)
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    """Route one prompt, in-process (default) or through a running service (--address)."""
    from service.routers import check_threshold

    if args.address:
        return _route_remote(args)
    _check_router_names([args.router])
    router = load_router(args.router, _artifact_dir(args, args.router), _session_options(args))
    strong, weak = router.default_pair
    strong, weak = args.strong_model or strong, args.weak_model or weak
    if args.threshold is not None:
        threshold = check_threshold(args.threshold)
    elif args.strong_fraction is not None and isinstance(router, RandomRouter):
        threshold = 1.0 - check_strong_fraction(args.strong_fraction)  # uniform scores
    elif args.strong_fraction is not None:
        threshold = threshold_for_fraction(router.manifest.calibration, args.strong_fraction)
    else:
        threshold = float(router.default_threshold)
    score = float(router.score([args.prompt], strong, weak)[0])
    chosen = strong if score >= threshold else weak
    print(
        json.dumps(
            {
                "model": chosen,
                "strong": chosen == strong,
                "strong_win_rate": round(score, 6),
                "threshold": threshold,
                "router": args.router,
            }
        )
    )
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    """Run the OpenAI-compatible HTTP gateway until SIGTERM/SIGINT."""
    import asyncio
    import signal

    from service.config import ConfigError
    from service.event_loop import run_on_event_loop
    from service.gateway.app import run_gateway
    from service.gateway.config import EndpointConfig, GatewayConfig, TierConfig, load_gateway_config

    if args.config:
        config = load_gateway_config(args.config)
    else:
        missing = [
            f for f in ("strong_model", "strong_url", "weak_model", "weak_url") if not getattr(args, f)
        ]
        if missing:
            flags = ", ".join("--" + m.replace("_", "-") for m in missing)
            raise ConfigError(f"without --config, the gateway needs {flags}")
        config = GatewayConfig(
            strong=TierConfig(args.strong_model, [EndpointConfig(args.strong_url, args.strong_key_env)]),
            weak=TierConfig(args.weak_model, [EndpointConfig(args.weak_url, args.weak_key_env)]),
        )
    if args.router_address:
        config.router_address = args.router_address
    if args.port is not None:
        config.port = args.port
    if args.host:
        config.host = args.host
    config.validate()
    configure_logging(args.log_level or config.log_level, sys.stdout)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_gateway(config, stop)

    run_on_event_loop(run(), config.event_loop)
    return 0


def _route_remote(args: argparse.Namespace) -> int:
    import grpc

    from service.grpc.gen.lmroute.v1 import router_pb2, router_pb2_grpc

    request = router_pb2.RouteRequest(prompt=args.prompt, router=args.router)
    if args.threshold is not None:
        request.threshold = args.threshold
    if args.strong_fraction is not None:
        request.strong_fraction = args.strong_fraction
    request.strong_model = args.strong_model or ""
    request.weak_model = args.weak_model or ""
    with grpc.insecure_channel(args.address) as channel:
        try:
            reply = router_pb2_grpc.RouterStub(channel).Route(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            raise LmrouteError(f"{exc.code().name}: {exc.details()}") from exc
    print(
        json.dumps(
            {
                "model": reply.model,
                "strong": reply.strong,
                "strong_win_rate": round(reply.strong_win_rate, 6),
                "threshold": reply.threshold,
                "router": reply.router,
                "reason": reply.reason,
                "cached": reply.cached,
                "request_id": reply.request_id,
            }
        )
    )
    return 0


def cmd_routers(args: argparse.Namespace) -> int:
    from service.routers.manifest import load_manifest

    for name in ROUTER_NAMES:
        if name == "random":
            print("random    seedable uniform scores (a baseline)")
            continue
        directory = _artifact_dir(args, name) or default_artifact_dir(name)
        try:
            m = load_manifest(directory)
        except LmrouteError as exc:
            print(f"{name:9s} unavailable: {exc}")
            continue
        strong, weak = m.default_pair
        print(
            f"{name:9s} version {m.version}  {strong} vs {weak}  "
            f"default threshold {m.raw.get('default_threshold')}  ({directory})"
        )
    return 0


def _add_runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", help="folder holding <router>/manifest.json (default: models_onnx)")
    p.add_argument(
        "--providers", help="onnxruntime providers in order, e.g. CUDAExecutionProvider,CPUExecutionProvider"
    )
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime default)")
    p.add_argument("--log-level", default="warning", choices=LEVELS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmroute", description="LLM routing: strong or weak model?")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="evaluate routers on the RouteLLM benchmarks")
    p.add_argument("--routers", nargs="+", required=True, metavar="ROUTER")
    p.add_argument("--benchmark", default="all", help="mt-bench | mmlu | gsm8k | all")
    p.add_argument("--data", default="../shared/data/eval", help="the eval data folder")
    p.add_argument("--output", default="eval_results", help="folder for CSV, JSON, PNG and caches")
    p.add_argument("--random-seeds", type=int, default=10)
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("calibrate", help="threshold for a target share of strong calls")
    p.add_argument("--routers", nargs="+", required=True, metavar="ROUTER")
    p.add_argument("--strong-model-pct", type=float, required=True, help="share in (0, 1), e.g. 0.5")
    p.add_argument("--prompts", help=".txt (one prompt a line) or .jsonl (prompt/text field)")
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("serve", help="run the gRPC Route service")
    p.add_argument("--routers", nargs="+", metavar="ROUTER", help="routers to load (default: the config's)")
    p.add_argument("--config", help="YAML config (see config.example.yaml)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--max-batch-size", type=int, help="1 turns batching off")
    p.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port (default 1; more for a GPU or many cores)",
    )
    p.add_argument(
        "--no-batch-probe",
        action="store_true",
        help="keep --max-batch-size as the cap instead of lowering it to what pays on this machine",
    )
    p.add_argument("--cache-size", type=int, help="route-decision cache entries; 0 disables it")
    p.add_argument("--models-dir")
    p.add_argument("--providers")
    p.add_argument(
        "--threads", type=int, default=0, help="intra-op threads per model instance (0: automatic)"
    )
    p.add_argument(
        "--instances",
        type=int,
        help="model sessions running batches at once (0: one per core on CPU, at most 8; 1 on CUDA)",
    )
    p.add_argument("--log-level", choices=LEVELS, default=None)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("gateway", help="run the OpenAI-compatible HTTP gateway")
    p.add_argument("--config", help="gateway YAML (see gateway.example.yaml)")
    p.add_argument("--router-address", help="host:port of `lmroute serve` (default localhost:50051)")
    p.add_argument("--strong-model")
    p.add_argument("--strong-url", help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    p.add_argument("--strong-key-env", help="environment variable with the strong backend's API key")
    p.add_argument("--weak-model")
    p.add_argument("--weak-url")
    p.add_argument("--weak-key-env")
    p.add_argument("--host")
    p.add_argument("--port", type=int, help="default 6060")
    p.add_argument("--log-level", choices=LEVELS, default=None)
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("route", help="route one prompt (in-process, on the local artifacts)")
    p.add_argument("prompt")
    p.add_argument("--router", default="mf")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, help="strong when score >= threshold, in [0, 1]")
    group.add_argument("--strong-fraction", type=float, help="use the calibrated threshold for this share")
    p.add_argument("--strong-model", help="override the default strong model")
    p.add_argument("--weak-model", help="override the default weak model")
    p.add_argument("--address", help="host:port of a running `lmroute serve` (default: in-process)")
    p.add_argument("--local", action="store_true", help="score in-process (the default)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds, with --address")
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("routers", help="list routers and their artifacts")
    _add_runtime_flags(p)
    p.set_defaults(func=cmd_routers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # command output goes to stdout; logs (JSON) to stderr, so both stay machine-readable
    configure_logging(args.log_level or "warning", sys.stderr)
    try:
        return args.func(args)
    except LmrouteError as exc:
        print(f"lmroute: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
