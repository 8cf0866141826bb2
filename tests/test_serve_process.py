"""`lmroute serve` as a real process: JSON logs without prompt text, SIGTERM exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import grpc
import onnxruntime
import pytest

from service.grpc.gen.lmroute.v1 import router_pb2 as pb
from service.grpc.gen.lmroute.v1 import router_pb2_grpc
from service.routers.session import cpu_cores
from service.workers import free_port
from tests.conftest import ROOT, subprocess_env

SECRET = "my card number is 4111-1111-1111-1111"


def test_serve_logs_json_without_prompts_and_exits_0_on_sigterm(tmp_path) -> None:
    port, metrics = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--routers",
            "mf",
            "random",
            "--config",
            str(ROOT / "config.example.yaml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics),
            "--log-level",
            "debug",
        ],
        cwd=tmp_path,  # artifact paths resolve relative to the config file, not the cwd
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = router_pb2_grpc.RouterStub(channel)
            for _ in range(100):  # the port opens before the routers are warm
                try:
                    reply = stub.Route(
                        pb.RouteRequest(prompt=SECRET, router="mf", request_id="req-7"), timeout=10
                    )
                    break
                except grpc.RpcError:
                    time.sleep(0.1)
            assert reply.request_id == "req-7"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "engine_ready" in names and "server_started" in names and "server_stopped" in names
    started = next(e for e in events if e["event"] == "server_started")
    assert started["event_loop"] == "uvloop"  # runtime.event_loop "auto", uvloop installed with the package
    ready = next(e for e in events if e["event"] == "engine_ready")
    # the example config asks for CUDA first: a GPU machine with onnxruntime-gpu serves on it
    on_gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    provider = "CUDAExecutionProvider" if on_gpu else "CPUExecutionProvider"
    assert ready["routers"]["mf"]["provider"] == provider and "batching" in ready
    # on CPU: one single-threaded model instance per core (on CUDA one), and a batch cap
    # measured at startup
    assert ready["model_instances"] == (1 if on_gpu else min(cpu_cores(), 8))
    assert on_gpu or ready["intra_op_threads"] >= 1
    probed = next(e for e in events if e["event"] == "batch_size_probed")
    assert probed["max_batch_size"] == ready["routers"]["mf"]["max_batch_size"]
    assert 1 <= probed["max_batch_size"] <= 64 and "1" in probed["ms_per_prompt"]
    route = next(e for e in events if e["event"] == "route")
    assert route["request_id"] == "req-7" and "latency_ms" in route and "batch_size" in route
    assert "4111" not in out and "4111" not in err  # never the prompt text


@pytest.mark.parametrize("workers", [1, 2])
def test_a_missing_artifact_stops_serve_with_one_clear_line(tmp_path, workers: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--routers", "mf", "--workers", str(workers)]
        + ["--models-dir", str(tmp_path / "nowhere"), "--host", "127.0.0.1", "--port", str(free_port())]
        + ["--metrics-port", str(free_port())],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2
    assert "lmroute: error:" in proc.stderr and "no router manifest here" in proc.stderr
    assert "nowhere" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    if workers > 1:  # the supervisor says which worker failed
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        assert "worker_failed_to_start" in [e["event"] for e in events]
