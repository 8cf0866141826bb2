"""`lmroute serve --workers N`: N server processes on one port, and one metrics endpoint.

One Python process routes a few thousand requests a second at most: the GIL serialises
request handling, however many cores or however fast a GPU the model has. Each worker here is
a full server (engine, batcher, model sessions) in its own process; they all bind the same
gRPC port with SO_REUSEPORT and the kernel spreads incoming connections over them. The
supervisor (this process) serves /metrics for all of them through prometheus_client's
multiprocess mode, forwards SIGTERM/SIGINT for a graceful stop, and stops everything if a
worker dies (a process manager then restarts the service as a whole).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

import structlog

from service.config import Config
from service.logging_setup import configure_logging

log = structlog.get_logger(__name__)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
ORPHAN_CHECK_S = 0.5
START_FAILED = 2  # the exit code of `lmroute serve` for a bad configuration or artifact


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it); for `serve --workers` with port 0,
    and for benchmarks and tests that start servers."""
    with socket.socket() as s:
        s.bind((host if host not in ("", "0.0.0.0") else "127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_main(config: Config, index: int, ready) -> None:
    """One worker: a RouteServer on the shared port, no metrics endpoint of its own."""
    from service.errors import LmrouteError
    from service.event_loop import run_on_event_loop
    from service.grpc.server import serve_until_signalled

    configure_logging(config.log_level)
    structlog.contextvars.bind_contextvars(worker=index)
    config.server = dataclasses.replace(config.server, metrics_port=None)
    _stop_when_orphaned(os.getppid())
    try:
        run_on_event_loop(serve_until_signalled(config, on_ready=ready.set), config.runtime.event_loop)
    except LmrouteError as exc:  # e.g. a missing artifact: one line, as `serve` prints alone
        print(f"lmroute: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(START_FAILED)


def _stop_when_orphaned(parent: int) -> None:
    """A supervisor killed outright (SIGKILL, the OOM killer) cannot stop its workers: each
    one watches its parent and stops itself gracefully, so no orphan keeps the port."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_S)
        log.warning("supervisor_gone_stopping", parent=parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def serve_workers(config: Config) -> int:
    """Run config.server.workers workers until SIGTERM/SIGINT; 0 after a graceful stop, 2 if a
    worker could not start (bad configuration or artifact), 1 if a worker died."""
    workers = config.server.workers
    # metrics port 0 picks a free port only where the gRPC port is 0 too (tests), as in one process
    metrics_enabled = config.server.metrics_port is not None and (
        config.server.metrics_port != 0 or config.server.port == 0
    )
    if config.server.port == 0:  # every worker must bind the same port: choose it here
        config.server = dataclasses.replace(config.server, port=free_port(config.server.host))
    metrics_dir = tempfile.mkdtemp(prefix="lmroute-metrics-")
    # set before any worker imports prometheus_client: its values then live in shared files
    os.environ[METRICS_DIR_ENV] = metrics_dir
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())

    ctx = mp.get_context("spawn")  # a fresh interpreter each: no inherited threads or CUDA state
    processes, readies = [], []
    for index in range(workers):
        ready = ctx.Event()
        proc = ctx.Process(target=_worker_main, args=(config, index, ready), name=f"lmroute-worker-{index}")
        proc.start()
        processes.append(proc)
        readies.append(ready)
    http = None
    failed = 0  # the exit code when something failed
    try:
        for index, ready in enumerate(readies):
            while not ready.wait(0.2):
                if stopping.is_set():
                    raise _Stop
                if not processes[index].is_alive():
                    code = processes[index].exitcode
                    log.error("worker_failed_to_start", worker=index, exit_code=code)
                    failed = START_FAILED if code == START_FAILED else 1
                    raise _Stop
        http = _start_metrics(config, metrics_dir) if metrics_enabled else None
        log.info(
            "workers_ready",
            workers=workers,
            port=config.server.port,
            metrics_port=http.server_port if http else None,
            pids=[p.pid for p in processes],
        )
        while not stopping.wait(0.5):
            dead = [p for p in processes if not p.is_alive()]
            if dead:
                log.error("worker_died", pids=[p.pid for p in dead], exit_codes=[p.exitcode for p in dead])
                failed = 1
                break
    except _Stop:
        pass
    finally:
        _stop_all(processes, config.server.grace_seconds)
        if http is not None:
            http.shutdown()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if failed:
        log.error("workers_stopped_after_failure")
        return failed
    log.info("workers_stopped")
    return 0


class _Stop(Exception):
    pass


def _start_metrics(config: Config, metrics_dir: str):
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=metrics_dir)
    server, _thread = start_http_server(
        config.server.metrics_port, addr=config.server.host, registry=registry
    )
    return server


def _stop_all(processes, grace: float) -> None:
    """SIGTERM every live worker (each drains its in-flight calls within the grace), then kill."""
    from prometheus_client import multiprocess

    for proc in processes:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)
    for proc in processes:
        proc.join(grace + 5)
        if proc.is_alive():
            log.warning("worker_killed", pid=proc.pid)
            proc.kill()
            proc.join()
        multiprocess.mark_process_dead(proc.pid)
