"""Real parts for gateway tests: backend processes, and the gateway on a loopback port."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from aiohttp import web

from service.gateway.app import Gateway
from service.gateway.config import ClientKey, EndpointConfig, GatewayConfig, TierConfig
from tests.conftest import ROOT

STRONG_MODEL, WEAK_MODEL = "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"


class Backend:
    """tests/fake_backend.py as a real process; answers 'answer from <name>'."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        port_file = tmp / f"{name}.port"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "fake_backend.py"),
                "--name",
                name,
                "--port-file",
                str(port_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def requests(self) -> list[dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_requests", timeout=5) as r:
            return json.load(r)

    def fail(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{self.port}/_fail", method="POST"), timeout=5
        )

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def gateway_config(router_address: str, strong: list[Backend], weak: list[Backend], **extra) -> GatewayConfig:
    return GatewayConfig(
        strong=TierConfig(STRONG_MODEL, [EndpointConfig(b.url, timeout_s=10) for b in strong]),
        weak=TierConfig(WEAK_MODEL, [EndpointConfig(b.url, timeout_s=10) for b in weak]),
        router_address=router_address,
        router_timeout_s=5.0,
        host="127.0.0.1",
        port=0,
        **extra,
    ).validate()


def acme_keys() -> list[ClientKey]:
    return [ClientKey(key="key-acme", labels={"tenant": "acme", "tier": "vip"}), ClientKey(key="key-plain")]


class LiveGateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.gateway = Gateway(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start():
            self.runner = web.AppRunner(self.gateway.app())
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]  # noqa: SLF001

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
