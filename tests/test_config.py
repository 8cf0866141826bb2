"""The config model: the documented example loads, typos and bad values are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, load_config
from tests.conftest import ROOT


def test_example_config_loads_with_paths_relative_to_the_file() -> None:
    config = load_config(ROOT / "config.example.yaml")
    assert [r.name for r in config.routers] == ["mf", "bert", "random"]
    assert Path(config.router("mf").artifact_dir) == ROOT / "models_onnx" / "mf"
    assert config.server.port == 50051 and config.server.metrics_port == 9464
    assert config.batching.max_wait_us == 0 and config.cache_size == 100_000
    assert [(r.name, r.match, r.route) for r in config.policy.rules][0] == ("vip", {"tier": "vip"}, "strong")
    assert config.policy.fallback == "strong" and config.limits.max_request_bytes == 1 << 20


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert [r.name for r in config.routers] == ["mf"] and config.log_level == "info"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batching: {max_batch_sise: 3}", "batching: unknown key(s) max_batch_sise"),
        ("routers: {mf: {artefact_dir: x}}", "routers.mf: unknown key(s) artefact_dir"),
        ("batching: {max_batch_size: 0}", "batching.max_batch_size must be >= 1"),
        ("routers: {mf: {default_threshold: 2}}", "default_threshold must be in [0, 1]"),
        ("policy: {rules: {x: {match: {a: b}, route: medium}}}", "policy.rules.x"),
        ("policy: {fallback: maybe}", "policy.fallback must be strong or weak"),
        ("log_level: loud", "log_level must be"),
        ("server: [1, 2]", "server: expected a mapping"),
        ("routers: {mf: {}, bert: {}}\nrouters_extra: 1", "config: unknown key(s) routers_extra"),
        (": : bad yaml", "cannot read config"),
        ("runtime: {instances: -1}", "runtime.instances must be an integer >= 0"),
        ("runtime: {intra_op_threads: two}", "runtime.intra_op_threads must be an integer >= 0"),
        ("runtime: {allow_spinning: maybe}", "runtime.allow_spinning must be true or false"),
        ("runtime: {low_load_threads: -2}", "runtime.low_load_threads must be null or an integer >= 0"),
        ("runtime: {event_loop: trio}", "runtime.event_loop must be one of auto, uvloop, asyncio"),
        ("server: {workers: 0}", "server.workers must be an integer >= 1"),
        ("server: {workers: two}", "server.workers must be an integer >= 1"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
