"""A real RouteServer on a loopback port, run on an event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Coroutine

import grpc

from service.config import (
    BatchingConfig,
    Config,
    LimitsConfig,
    PolicyConfig,
    PolicyRule,
    RouterConfig,
    ServerConfig,
)
from service.grpc.gen.lmroute.v1 import router_pb2_grpc
from service.grpc.server import RouteServer
from tests.conftest import MODELS


def service_config(**overrides) -> Config:
    config = Config(
        routers=[
            RouterConfig("mf", str(MODELS / "mf")),
            RouterConfig("bert", str(MODELS / "bert")),
            RouterConfig("random", seed=0),
        ],
        server=ServerConfig(host="127.0.0.1", port=0, metrics_port=0, grace_seconds=10),
        batching=BatchingConfig(probe_batch_size=False),  # these tests check batching itself
        policy=PolicyConfig(rules=[PolicyRule("vip", {"tier": "vip"}, "strong")]),
        limits=LimitsConfig(max_request_bytes=64 * 1024),
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config.validate()


class LiveServer:
    def __init__(self, config: Config) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = RouteServer(config)

    def call(self, coro: Coroutine, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> LiveServer:
        self.call(self.server.start())
        self.address = f"127.0.0.1:{self.server.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = router_pb2_grpc.RouterStub(self.channel)
        return self

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample in /metrics (0 if absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics_text().splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            metric, _, label_part = key.partition("{")
            if metric != name:
                continue
            have = ",".join(sorted(label_part.rstrip("}").split(","))) if label_part else ""
            if have == want:
                return float(value)
        return 0.0

    def stop(self, grace: float | None = None) -> None:
        self.channel.close()
        self.call(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
