"""`lmroute serve --workers N`: N real server processes on one port, one /metrics for all,
a graceful stop on SIGTERM, and a clean failure when a worker dies."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest

from service.grpc.gen.lmroute.v1 import router_pb2 as pb
from service.grpc.gen.lmroute.v1 import router_pb2_grpc
from service.workers import free_port
from tests.conftest import ROOT, subprocess_env

pytestmark = pytest.mark.slow


class Workers:
    """`lmroute serve --workers 2` with its JSON log lines collected as they come."""

    def __init__(self, tmp_path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--routers", "mf"]
            + ["--config", str(ROOT / "config.example.yaml"), "--host", "127.0.0.1"]
            + ["--port", str(self.port), "--metrics-port", str(self.metrics_port), "--workers", "2"]
            + ["--instances", "1", "--no-batch-probe", "--cache-size", "0", "--log-level", "debug"],
            cwd=tmp_path,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.events: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.put(json.loads(line))

    def wait_for(self, event: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                e = self.events.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None or event.startswith("workers_"), "the service exited"
                continue
            self.seen.append(e)
            if e["event"] == event:
                return e
        raise AssertionError(f"no {event!r} within {timeout} s; saw {[e['event'] for e in self.seen]}")

    def drain(self) -> list[dict]:
        while True:
            try:
                self.seen.append(self.events.get(timeout=1))
            except queue.Empty:
                return self.seen

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("lmroute_")
        }

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def workers(tmp_path):
    service = Workers(tmp_path)
    yield service
    service.close()


def test_two_workers_share_the_port_and_one_metrics_endpoint(workers) -> None:
    ready = workers.wait_for("workers_ready")
    assert len(ready["pids"]) == 2 and ready["port"] == workers.port
    # the kernel spreads connections (not calls) over the workers: many channels, a few calls each
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{workers.port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(24)
    ]
    try:
        for k, channel in enumerate(channels):
            stub = router_pb2_grpc.RouterStub(channel)
            for i in range(2):
                reply = stub.Route(pb.RouteRequest(prompt=f"prove that {k} + {i} is even", router="mf"))
                assert reply.model in ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
    finally:
        for channel in channels:
            channel.close()
    metrics = workers.metrics()
    assert metrics['lmroute_requests_total{code="OK",rpc="Route"}'] == 48  # summed over the workers
    assert metrics['lmroute_model_instances{model="mf"}'] == 2  # one session in each worker
    workers.proc.send_signal(signal.SIGTERM)
    assert workers.proc.wait(60) == 0
    events = workers.drain()
    served_by = {e.get("worker") for e in events if e["event"] == "route"}
    assert served_by == {0, 1}
    assert sum(e["event"] == "server_stopped" for e in events) == 2
    assert events[-1]["event"] == "workers_stopped"


def test_a_dead_worker_stops_the_service_with_exit_code_1(workers) -> None:
    ready = workers.wait_for("workers_ready")
    os.kill(ready["pids"][1], signal.SIGKILL)
    assert workers.proc.wait(60) == 1
    died = workers.wait_for("worker_died", timeout=10)
    assert died["pids"] == [ready["pids"][1]]
    # the surviving worker was stopped too: nothing listens on the port any more
    with (
        grpc.insecure_channel(f"127.0.0.1:{workers.port}") as channel,
        pytest.raises(grpc.FutureTimeoutError),
    ):
        grpc.channel_ready_future(channel).result(timeout=2)


def test_workers_stop_themselves_when_the_supervisor_is_killed(workers) -> None:
    ready = workers.wait_for("workers_ready")
    workers.proc.kill()  # SIGKILL: the supervisor gets no chance to stop them
    workers.proc.wait(30)
    deadline = time.monotonic() + 60
    alive = set(ready["pids"])
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if os.path.exists(f"/proc/{pid}") and not _zombie(pid)}
        time.sleep(0.2)
    assert not alive, f"orphaned workers {alive} still running"
    with (
        grpc.insecure_channel(f"127.0.0.1:{workers.port}") as channel,
        pytest.raises(grpc.FutureTimeoutError),
    ):
        grpc.channel_ready_future(channel).result(timeout=2)


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
