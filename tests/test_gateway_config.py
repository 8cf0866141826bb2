"""Gateway config and endpoint pools; `lmroute gateway` as a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import openai
import pytest

from service.config import ConfigError
from service.gateway.backends import TierPool
from service.gateway.config import EndpointConfig, TierConfig, load_gateway_config
from service.workers import free_port
from tests.conftest import ROOT, subprocess_env
from tests.gateway_harness import Backend


def test_example_config_loads(monkeypatch) -> None:
    monkeypatch.setenv("LMROUTE_KEY_ACME", "k1")
    monkeypatch.setenv("LMROUTE_KEY_INTERNAL", "k2")
    config = load_gateway_config(ROOT / "gateway.example.yaml")
    assert config.port == 6060 and config.fallback_tier == "strong" and config.route_on == "last_user"
    assert len(config.weak.endpoints) == 2 and config.strong.endpoints[0].api_key_env == "OPENAI_API_KEY"
    assert config.keys[0].value() == "k1" and config.keys[0].labels == {"tenant": "acme", "tier": "vip"}


def test_a_key_without_a_value_is_refused(monkeypatch) -> None:
    monkeypatch.delenv("LMROUTE_KEY_ACME", raising=False)
    with pytest.raises(ConfigError, match="key_env 'LMROUTE_KEY_ACME'"):
        load_gateway_config(ROOT / "gateway.example.yaml")


def test_least_in_flight_and_cool_down() -> None:
    pool = TierPool(
        "weak", TierConfig("m", [EndpointConfig("http://a/v1"), EndpointConfig("http://b/v1")]), 2, 60
    )
    a, b = pool.endpoints
    a.in_flight = 3
    assert pool.candidates() == [b, a]
    pool.failed(b)
    assert pool.candidates()[0] is b  # one failure: still in rotation
    pool.failed(b)
    assert pool.candidates() == [a, b]  # cooling endpoints go last
    pool.succeeded(b)
    assert b.cooling_until == 0 and b.consecutive_failures == 0


def test_lmroute_gateway_quick_start_process(tmp_path) -> None:
    strong, weak = Backend("strong-q", tmp_path), Backend("weak-q", tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "gateway",
            "--router-address",
            "127.0.0.1:1",
            "--strong-model",
            "big",
            "--strong-url",
            strong.url,
            "--weak-model",
            "small",
            "--weak-url",
            weak.url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=10)
        for _ in range(100):
            try:
                reply = client.chat.completions.create(
                    model="small", messages=[{"role": "user", "content": "hi"}]
                )
                break
            except openai.APIConnectionError:
                time.sleep(0.1)
        assert reply.choices[0].message.content == "answer from weak-q"
        # no router service at 127.0.0.1:1: the fallback tier (strong) answers routed calls
        routed = client.chat.completions.create(
            model="router-mf-0.5", messages=[{"role": "user", "content": "hi"}]
        )
        assert routed.choices[0].message.content == "answer from strong-q"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "gateway_started" in out and "hi" not in out.replace('"hi', "")  # no prompt text logged
        assert '"event_loop": "uvloop"' in out  # event_loop "auto": the aiohttp app runs on uvloop
    finally:
        if proc.poll() is None:
            proc.kill()
        strong.kill()
        weak.kill()
