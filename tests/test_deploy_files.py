"""Static checks on the deployment files (Dockerfile, compose, Prometheus rules, Grafana).

No network and no Docker. The promtool checks run only where `promtool` is on PATH
(Debian/Ubuntu: `apt-get install prometheus`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "lmroute.rules.yml"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DATASOURCE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASH_PROVIDER = DEPLOY / "grafana" / "provisioning" / "dashboards" / "lmroute.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "lmroute.json"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

YAML_FILES = [RULES, PROM_CONFIG, DATASOURCE, DASH_PROVIDER, COMPOSE]

# What the service exports (prometheus-client naming: counters end in _total, histograms
# expose _bucket/_sum/_count).
COUNTERS = [
    "lmroute_route_decisions_total",
    "lmroute_requests_total",
    "lmroute_cache_hits_total",
    "lmroute_cache_misses_total",
]
HISTOGRAMS = [
    "lmroute_request_seconds",
    "lmroute_strong_win_rate",
    "lmroute_batch_size",
    "lmroute_batch_tokens",
    "lmroute_queue_wait_seconds",
    "lmroute_inference_seconds",
]
GAUGES = ["lmroute_queue_depth", "lmroute_max_batch_size", "lmroute_model_instances"]
SERVICE_METRICS = frozenset(
    COUNTERS + GAUGES + [f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")]
)

REQUIRED_RECORDS = {
    "lmroute:route_decisions:rate1m",
    "lmroute:strong_split_ratio:rate1m",
    "lmroute:strong_split_ratio:rate5m",
    "lmroute:strong_split_ratio:total",
}

PROMQL_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    }
)


def _load_yaml(path: Path):
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _rules() -> list[dict]:
    doc = _load_yaml(RULES)
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _record_names() -> set[str]:
    return {rule["record"] for rule in _rules()}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def metric_names(expr: str) -> set[str]:
    """Metric (and recording-rule) names referenced by a PromQL expression.

    A small lexer, not a parser: drops strings, label matchers, range/subquery brackets,
    grouping label lists and Grafana variables, then keeps the identifiers that are neither
    keywords nor function calls.
    """
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?", s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def test_metric_names_lexer():
    expr = (
        'histogram_quantile(0.99, sum by (rpc, le) (rate(lmroute_request_seconds_bucket{rpc="Route"}'
        "[$__rate_interval]))) and on (rpc) lmroute:requests:rate1m > 1e3 offset 5m"
    )
    assert metric_names(expr) == {"lmroute_request_seconds_bucket", "lmroute:requests:rate1m"}


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path):
    assert isinstance(_load_yaml(path), dict)


def test_rules_group():
    doc = _load_yaml(RULES)
    groups = {g["name"]: g for g in doc["groups"]}
    assert set(groups) == {"lmroute"}
    assert groups["lmroute"]["interval"] == "15s"
    rules = _rules()
    assert all(set(rule) >= {"record", "expr"} and "alert" not in rule for rule in rules)
    names = [rule["record"] for rule in rules]
    assert len(names) == len(set(names)), "duplicate recording rules"
    assert REQUIRED_RECORDS <= set(names)
    for name in names:
        assert re.fullmatch(r"[a-zA-Z_:][\w:]*", name) and name.count(":") == 2, name


def test_rule_exprs_reference_known_metrics():
    known = set(SERVICE_METRICS)
    for rule in _rules():  # a rule may use the service's metrics and the rules recorded before it
        used = metric_names(rule["expr"])
        assert used, rule["record"]
        assert used <= known, f"{rule['record']}: unknown {sorted(used - known)}"
        known.add(rule["record"])


def test_split_ratio_rules_use_tier_label():
    exprs = {rule["record"]: rule["expr"] for rule in _rules()}
    for name in ("rate1m", "rate5m", "total"):
        expr = exprs[f"lmroute:strong_split_ratio:{name}"]
        assert 'tier="strong"' in expr
        assert "sum by (router)" in expr


def test_prometheus_config():
    cfg = _load_yaml(PROM_CONFIG)
    assert cfg["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    job = jobs["lmroute"]
    assert job.get("scrape_interval", cfg.get("global", {}).get("scrape_interval")) == "5s"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["lmroute:9464"]


def test_grafana_provisioning():
    ds = _load_yaml(DATASOURCE)["datasources"]
    assert len(ds) == 1
    assert ds[0]["type"] == "prometheus"
    assert ds[0]["uid"] == "prometheus"
    assert ds[0]["url"] == "http://prometheus:9090"
    assert ds[0]["isDefault"] is True
    providers = _load_yaml(DASH_PROVIDER)["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_json():
    dash = _dashboard()
    assert dash["title"] == "lmroute"
    assert dash["uid"] == "lmroute"
    assert 36 <= dash["schemaVersion"] <= 41
    ds_uid = _load_yaml(DATASOURCE)["datasources"][0]["uid"]
    panels = _panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    known = SERVICE_METRICS | _record_names()
    used_everywhere: set[str] = set()
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == ds_uid, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", {"uid": ds_uid})["uid"] == ds_uid, panel["title"]
            used = metric_names(target["expr"])
            assert used, f"{panel['title']}: {target['expr']}"
            assert used <= known, f"{panel['title']}: unknown {sorted(used - known)}"
            used_everywhere |= used
    split = [p for p in panels if "lmroute:strong_split_ratio:rate1m" in str(p.get("targets"))]
    assert split and split[0]["type"] == "timeseries"
    for needed in ("lmroute:requests:rate1m", "lmroute_queue_depth", "lmroute_route_decisions_total"):
        assert needed in used_everywhere


def test_compose():
    compose = _load_yaml(COMPOSE)
    services = compose["services"]
    assert set(services) >= {"lmroute", "prometheus", "grafana"}
    assert services["lmroute"]["build"] == "."
    assert {"50051:50051", "9464:9464"} <= set(services["lmroute"]["ports"])
    assert "9090:9090" in services["prometheus"]["ports"]
    assert "3000:3000" in services["grafana"]["ports"]
    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        repo, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), image
        for volume in services[name]["volumes"]:
            host = volume.split(":")[0]
            assert (ROOT / host).exists(), f"{name}: {host} does not exist"
    env = services["grafana"]["environment"]
    assert str(env["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "true"


def test_dockerfile():
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert "pip install --no-cache-dir '.[cpu]'" in text
    assert "-e " not in text and "--editable" not in text
    assert "LMROUTE_MODELS_DIR=/app/models_onnx" in text
    exposed = {port for line in lines if line.startswith("EXPOSE") for port in line.split()[1:]}
    assert exposed == {"50051", "9464"}
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1] not in {"root", "0"}
    cmd = [line for line in lines if line.startswith("CMD")]
    assert json.loads(cmd[-1][len("CMD") :]) == [
        "lmroute",
        "serve",
        "--config",
        "/app/config.example.yaml",
        "--host",
        "0.0.0.0",
    ]
    ignored = set(DOCKERIGNORE.read_text(encoding="utf-8").split())
    assert {".venv*", ".cache", "eval_results", ".git", "benchmarks/results"} <= ignored
    assert ignored & {"__pycache__", "**/__pycache__"}
    assert not ignored & {"models_onnx", "service", "export", "pyproject.toml", "README.md"}


# --- promtool ------------------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH")


def _promtool(*args: str | Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([PROMTOOL, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@needs_promtool
def test_promtool_check_rules():
    _promtool("check", "rules", RULES.relative_to(ROOT))


@needs_promtool
def test_promtool_check_config(tmp_path: Path):
    # The file as shipped (rule_files is a container path, so syntax only) ...
    _promtool("check", "config", "--syntax-only", PROM_CONFIG.relative_to(ROOT))
    # ... and in full, with rule_files pointed at this checkout's rules.
    cfg = _load_yaml(PROM_CONFIG)
    cfg["rule_files"] = [str(RULES.parent / "*.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    proc = _promtool("check", "config", local)
    assert "1 rule files found" in proc.stdout + proc.stderr


def _series(router: str, tier: str, model: str, reason: str, values: str) -> dict:
    labels = f'router="{router}",tier="{tier}",model="{model}",reason="{reason}"'
    return {"series": f"lmroute_route_decisions_total{{{labels}}}", "values": values}


@needs_promtool
def test_promtool_rule_unit_tests(tmp_path: Path):
    """The split-ratio rules on synthetic counters: exact ratios, 0 for no strong, no series when idle."""
    # Every 15s: mf makes 3 strong + 8 weak (score) + 1 weak (policy); bert only weak; idle nothing.
    series = [
        _series("mf", "strong", "gpt-4", "score", "0+3x40"),
        _series("mf", "weak", "mixtral", "score", "0+8x40"),
        _series("mf", "weak", "mixtral", "policy:short", "0+1x40"),
        _series("bert", "weak", "mixtral", "fallback:timeout", "0+2x40"),
        _series("idle", "strong", "gpt-4", "score", "0x40"),
        {"series": 'lmroute_batch_size_sum{model="mf"}', "values": "0+32x40"},
        {"series": 'lmroute_batch_size_count{model="mf"}', "values": "0+4x40"},
        {"series": "lmroute_cache_hits_total", "values": "0+3x40"},
        {"series": "lmroute_cache_misses_total", "values": "0+1x40"},
    ]

    def samples(name: str, values: dict[str, float], label: str = "router") -> list[dict]:
        return [{"labels": f'{name}{{{label}="{k}"}}', "value": v} for k, v in values.items()]

    tests = [
        {
            "expr": "lmroute:strong_split_ratio:total",
            "eval_time": "10m",
            "exp_samples": samples("lmroute:strong_split_ratio:total", {"mf": 120 / 480, "bert": 0}),
        },
        {
            "expr": "lmroute:strong_split_ratio:rate1m",
            "eval_time": "10m",
            "exp_samples": samples("lmroute:strong_split_ratio:rate1m", {"mf": 0.25, "bert": 0}),
        },
        {
            "expr": "lmroute:strong_split_ratio:rate5m",
            "eval_time": "10m",
            "exp_samples": samples("lmroute:strong_split_ratio:rate5m", {"mf": 0.25, "bert": 0}),
        },
        {
            "expr": 'lmroute:route_decisions:rate1m{router="mf"}',
            "eval_time": "10m",
            "exp_samples": [
                {"labels": 'lmroute:route_decisions:rate1m{router="mf",tier="strong"}', "value": 0.2},
                {"labels": 'lmroute:route_decisions:rate1m{router="mf",tier="weak"}', "value": 0.6},
            ],
        },
        {
            "expr": "lmroute:batch_size:mean_rate5m",
            "eval_time": "10m",
            "exp_samples": samples("lmroute:batch_size:mean_rate5m", {"mf": 8}, label="model"),
        },
        {
            "expr": "lmroute:cache_hit_ratio:rate5m",
            "eval_time": "10m",
            "exp_samples": [{"labels": "lmroute:cache_hit_ratio:rate5m", "value": 0.75}],
        },
        # Before any traffic: no ratio series at all (no NaN).
        {"expr": "lmroute:strong_split_ratio:total", "eval_time": "0m", "exp_samples": []},
    ]
    spec = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": tests}],
    }
    path = tmp_path / "lmroute.rules.test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    _promtool("test", "rules", path)
