"""A real Prometheus (Debian's `prometheus` package, installed by .ci/run) scrapes a running
service; the split-ratio recording rule must equal the decisions this test caused."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from service.grpc.gen.lmroute.v1 import router_pb2 as pb
from service.workers import free_port
from tests.conftest import ROOT
from tests.service_harness import LiveServer, service_config

PROMETHEUS = shutil.which("prometheus")
RULES = ROOT / "deploy" / "prometheus" / "rules" / "lmroute.rules.yml"
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="needs the prometheus binary (apt-get install prometheus)"
)


def query(port: int, expr: str) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    return {r["metric"].get("router", ""): float(r["value"][1]) for r in body["data"]["result"]}


@pytest.fixture
def prometheus_and_service(tmp_path: Path):
    service = LiveServer(service_config()).start()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: lmroute\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{service.server.metrics_port}']}}]\n"
    )
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield service, port
    finally:
        proc.terminate()
        proc.wait(10)
        service.stop()


def test_split_ratio_rule_matches_the_decisions(prometheus_and_service) -> None:
    service, port = prometheus_and_service
    for i in range(6):  # threshold 0: strong
        service.stub.Route(pb.RouteRequest(prompt=f"strong {i}", router="mf", threshold=0.0), timeout=30)
    for i in range(18):  # threshold 1: weak (scores are < 1)
        service.stub.Route(pb.RouteRequest(prompt=f"weak {i}", router="mf", threshold=1.0), timeout=30)
    for i in range(4):  # a policy rule forces strong on bert
        service.stub.Route(
            pb.RouteRequest(prompt=f"vip {i}", router="bert", threshold=1.0, labels={"tier": "vip"}),
            timeout=30,
        )
    expected = {"mf": 6 / 24, "bert": 1.0}
    deadline = time.time() + 60
    got: dict[str, float] = {}
    while time.time() < deadline:
        got = query(port, "lmroute:strong_split_ratio:total")
        if all(abs(got.get(k, -1) - v) < 1e-9 for k, v in expected.items()):
            break
        time.sleep(0.5)
    assert got.get("mf") == pytest.approx(expected["mf"]) and got.get("bert") == pytest.approx(1.0), got
    counts = query(port, 'sum by (router) (lmroute_route_decisions_total{tier="strong"})')
    assert counts["mf"] == 6 and counts["bert"] == 4
