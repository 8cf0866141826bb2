"""One config model for the service: YAML file, then CLI flags on top (see config.example.yaml)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from service.errors import LmrouteError
from service.event_loop import EventLoopUnavailable, resolve_event_loop

TIERS = ("strong", "weak")


class ConfigError(LmrouteError):
    """The config file or a flag is invalid; the message names the key."""


@dataclass
class RouterConfig:
    name: str
    artifact_dir: str | None = None  # default: <models dir>/<name>; unused by `random`
    default_threshold: float | None = None  # default: the manifest's (50% strong on the pool)
    strong_model: str | None = None  # default: the manifest's pair
    weak_model: str | None = None
    seed: int | None = None  # random router only


@dataclass
class BatchingConfig:
    max_batch_size: int = 64
    max_batch_tokens: int = 16384  # padded tokens (batch size x longest prompt) per model run
    max_wait_us: int = 0  # 0: a lone request on an idle model runs at once
    # a prompt joins a batch only if padding it (or the batch) to the longest stays within this
    # ratio of its own length: padding costs more than batching gains on CPU (see benchmarks/)
    max_padding_ratio: float = 1.3
    max_queue: int = 2048  # queued prompts per model before RESOURCE_EXHAUSTED
    # batches formed ahead per model instance, so its thread starts the next one without
    # waiting for the event loop (measured +7% req/s on 2 cores); null: 1 when the batch cap
    # is 1 (nothing to gather), else 0, since a batch formed early gathers less company
    queued_batches: int | None = None
    # time the model at startup and lower max_batch_size to the largest batch that is clearly
    # cheaper per prompt on this machine (1 on a small CPU, large on a GPU); see batch_probe
    probe_batch_size: bool = True


@dataclass
class RuntimeConfig:
    providers: list[str] = field(default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    intra_op_threads: int = 0  # per model instance; 0: cores / instances on CPU, ort default on CUDA
    instances: int = 0  # sessions per model running batches at once; 0: a core each on CPU (<= 8), 1 on CUDA
    allow_spinning: bool = False  # onnxruntime busy-waiting threads: off, they steal the server's CPU
    # threads of one more session per model, used for a batch that runs alone (nothing else
    # queued or running): a lone prompt then has every core. null: the CPU's cores where the
    # instances are single-threaded, else off; 0: off
    low_load_threads: int | None = None
    # the server process's asyncio loop: "auto" (uvloop where installed, else asyncio),
    # "uvloop" (refused at startup where it is not installed) or "asyncio"
    event_loop: str = "auto"


@dataclass
class PolicyRule:
    name: str
    match: dict[str, str]  # every label must equal its value
    route: str  # "strong" | "weak"


@dataclass
class PolicyConfig:
    rules: list[PolicyRule] = field(default_factory=list)
    fallback: str = "strong"  # tier used when scoring fails


@dataclass
class LimitsConfig:
    max_request_bytes: int = 1 << 20
    max_labels: int = 16
    max_label_chars: int = 256
    max_batch_requests: int = 1024  # RouteBatch size


@dataclass
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 50051
    metrics_port: int | None = 9464  # null disables the metrics endpoint; 0 picks a free port
    grace_seconds: float = 10.0
    # server processes sharing the port (SO_REUSEPORT), each with its own engine and model
    # sessions: one Python process tops out at a few thousand routes/s (the GIL), a GPU does not
    workers: int = 1


@dataclass
class Config:
    routers: list[RouterConfig] = field(default_factory=lambda: [RouterConfig("mf")])
    server: ServerConfig = field(default_factory=ServerConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cache_size: int = 100_000  # route-decision cache entries; 0 disables it
    models_dir: str | None = None
    log_level: str = "info"

    def router(self, name: str) -> RouterConfig | None:
        return next((r for r in self.routers if r.name == name), None)

    def validate(self) -> Config:
        if not self.routers:
            raise ConfigError("routers: configure at least one router")
        names = [r.name for r in self.routers]
        if len(set(names)) != len(names):
            raise ConfigError(f"routers: duplicate names in {names}")
        for r in self.routers:
            t = r.default_threshold
            if t is not None and not 0.0 <= t <= 1.0:
                raise ConfigError(f"routers.{r.name}.default_threshold must be in [0, 1], got {t}")
        b = self.batching
        for key in ("max_batch_size", "max_batch_tokens", "max_queue"):
            if getattr(b, key) < 1:
                raise ConfigError(f"batching.{key} must be >= 1")
        q = b.queued_batches
        if q is not None and (isinstance(q, bool) or not isinstance(q, int) or q < 0):
            raise ConfigError(f"batching.queued_batches must be null or an integer >= 0, got {q!r}")
        if b.max_wait_us < 0:
            raise ConfigError("batching.max_wait_us must be >= 0")
        if b.max_padding_ratio < 1.0:
            raise ConfigError("batching.max_padding_ratio must be >= 1")
        for key in ("instances", "intra_op_threads"):
            value = getattr(self.runtime, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"runtime.{key} must be an integer >= 0 (0: automatic), got {value!r}")
        low = self.runtime.low_load_threads
        if low is not None and (isinstance(low, bool) or not isinstance(low, int) or low < 0):
            raise ConfigError(f"runtime.low_load_threads must be null or an integer >= 0, got {low!r}")
        check_event_loop(self.runtime.event_loop, section="runtime.")
        if not isinstance(self.batching.probe_batch_size, bool):
            raise ConfigError(
                f"batching.probe_batch_size must be true or false, got {self.batching.probe_batch_size!r}"
            )
        if not isinstance(self.runtime.allow_spinning, bool):
            raise ConfigError(
                f"runtime.allow_spinning must be true or false, got {self.runtime.allow_spinning!r}"
            )
        workers = self.server.workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"server.workers must be an integer >= 1, got {workers!r}")
        for rule in self.policy.rules:
            if rule.route not in TIERS or not rule.match:
                raise ConfigError(f"policy.rules.{rule.name}: needs a non-empty match and route strong|weak")
        if self.policy.fallback not in TIERS:
            raise ConfigError("policy.fallback must be strong or weak")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug|info|warning|error, got {self.log_level!r}")
        return self


def check_event_loop(kind: str, section: str = "") -> None:
    """A config's `event_loop` key (`section` prefixes the key in the message): ConfigError
    for an unknown value, or "uvloop" where uvloop is not installed."""
    try:
        resolve_event_loop(kind)
    except EventLoopUnavailable as exc:
        raise ConfigError(f"{section}{exc}") from None


def _build(cls, data: Any, where: str):
    """Build a dataclass from a mapping, refusing unknown keys (typos must not pass silently)."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**data)


def config_from_dict(data: dict[str, Any]) -> Config:
    data = dict(data or {})
    routers_raw = data.pop("routers", None)
    routers = []
    if isinstance(routers_raw, dict):  # {mf: {...}, bert: {...}}
        for name, body in routers_raw.items():
            routers.append(_build(RouterConfig, {"name": name, **(body or {})}, f"routers.{name}"))
    elif isinstance(routers_raw, list):  # [mf, bert] or [{name: mf, ...}]
        for item in routers_raw:
            body = {"name": item} if isinstance(item, str) else item
            routers.append(_build(RouterConfig, body, "routers[]"))
    elif routers_raw is not None:
        raise ConfigError("routers: expected a mapping or a list")
    policy_raw = data.pop("policy", None) or {}
    rules = [
        _build(PolicyRule, {"name": name, **(body or {})}, f"policy.rules.{name}")
        for name, body in (policy_raw.pop("rules", None) or {}).items()
    ]
    sections = {
        "server": ServerConfig,
        "batching": BatchingConfig,
        "runtime": RuntimeConfig,
        "limits": LimitsConfig,
    }
    built = {key: _build(cls, data.pop(key, None), key) for key, cls in sections.items()}
    policy = _build(PolicyConfig, {**policy_raw, "rules": rules}, "policy")
    top = _build(Config, data, "config")
    return dataclasses.replace(top, routers=routers or top.routers, policy=policy, **built).validate()


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config().validate()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    try:
        config = config_from_dict(data)
    except TypeError as exc:  # a missing required field
        raise ConfigError(f"{path}: {exc}") from exc
    # relative artifact paths are relative to the config file, not to the working directory
    base = path.resolve().parent
    for router in config.routers:
        if router.artifact_dir and not Path(router.artifact_dir).is_absolute():
            router.artifact_dir = str(base / router.artifact_dir)
    if config.models_dir and not Path(config.models_dir).is_absolute():
        config.models_dir = str(base / config.models_dir)
    return config
