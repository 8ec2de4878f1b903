"""deploy/prometheus: the scrape config and alert rules pass promtool, the alerts fire in promtool's unit tests, and
every expression uses only the gateway's metric names (also used by the Grafana test).

promtool comes from Debian's `prometheus` package (Makefile APT_PACKAGES); without it these tests fail, not skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"

# The gateway's metrics (service/sarm_gateway, issue "HTTP API … metrics … and deployment"): name -> type.
METRICS: dict[str, str] = {
    "sarm_grpc_requests_total": "counter",
    "sarm_grpc_request_duration_seconds": "histogram",
    "sarm_http_requests_total": "counter",
    "sarm_http_request_duration_seconds": "histogram",
    "sarm_engine_latency_seconds": "histogram",
    "sarm_batcher_batch_size_rows": "histogram",
    "sarm_cache_hits_total": "counter",
    "sarm_cache_misses_total": "counter",
    "sarm_cache_errors_total": "counter",
    "sarm_engine_in_flight_requests": "gauge",
    "sarm_batcher_queue_depth_rows": "gauge",
    "sarm_grpc_active_streams": "gauge",
    "sarm_model_info": "gauge",
    "sarm_service_ready": "gauge",
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords, labels or numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings first: they may hold braces
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries ([5m], [$__rate_interval])
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def metric_family(series: str) -> str | None:
    """The listed metric a series name belongs to (`x_bucket` -> `x` for histograms only), else None."""
    if METRICS.get(series) in {"counter", "gauge"}:
        return series
    for suffix in HISTOGRAM_SERIES:
        base = series.removesuffix(suffix)
        if series.endswith(suffix) and METRICS.get(base) == "histogram":
            return base
    return None


def unknown_metrics(expr: str, allowed_extra: frozenset[str] = frozenset()) -> set[str]:
    return {name for name in promql_metric_names(expr) if metric_family(name) is None and name not in allowed_extra}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: apt-get install prometheus (the Makefile's APT_PACKAGES has it)")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def check_promql(exprs: dict[str, str], tmp_path: Path) -> None:
    """Parse every expression with Prometheus' own parser (promtool check rules on recording rules)."""
    rules = {
        "groups": [
            {
                "name": "check",
                "rules": [
                    {"record": re.sub(r"\W", "_", f"check:{name}"), "expr": expr} for name, expr in exprs.items()
                ],
            }
        ]
    }
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in alert_rules()}


def test_metric_name_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(sarm_engine_latency_seconds_bucket{stage="total",'
        'job=~"$job"}[$__rate_interval]))) > 1e-3 and on (job) absent(up{job="x"}) or sarm_service_ready == 0'
    )
    assert promql_metric_names(expr) == {"sarm_engine_latency_seconds_bucket", "up", "sarm_service_ready"}
    assert metric_family("sarm_engine_latency_seconds_bucket") == "sarm_engine_latency_seconds"
    assert metric_family("sarm_cache_hits_total_bucket") is None  # a counter has no buckets
    assert metric_family("sarm_requests_total") is None
    assert unknown_metrics("rate(sarm_grpc_requests_total[5m]) / rate(nv_inference_count[5m])") == {
        "nv_inference_count"
    }


def test_scrape_config_is_valid() -> None:
    result = promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", PROMETHEUS / "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", PROMETHEUS / "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_shown_to_fire_in_the_unit_tests() -> None:
    cases = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in cases for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert fired == set(alerts())


def test_alerts_cover_errors_latency_cache_and_readiness() -> None:
    rules = alerts()
    exprs = {name: " ".join(rule["expr"].split()) for name, rule in rules.items()}
    assert "sarm_grpc_requests_total{code=~" in exprs["SarmGrpcErrorRatioHigh"]
    assert 'sarm_http_requests_total{code=~"5..|429"}' in exprs["SarmHttpErrorRatioHigh"]
    latency = exprs["SarmLatencyP99AboveBudget"]
    assert latency.startswith("histogram_quantile(0.99,") and 'stage="total"' in latency
    assert latency.endswith("> 0.033")  # the 33 ms control-loop budget (30 Hz)
    assert "sarm_cache_errors_total" in exprs["SarmCacheErrors"] and "by (job, tier)" in exprs["SarmCacheErrors"]
    assert exprs["SarmGatewayNotReady"] == "sarm_service_ready == 0"
    assert exprs["SarmGatewayDown"] == 'up{job="sarm-gateway"} == 0'
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"\d+m", rule["for"]), name


def test_rules_use_only_gateway_metrics() -> None:
    for rule in alert_rules():
        assert not unknown_metrics(rule["expr"], frozenset({"up"})), rule["alert"]


def test_alert_jobs_are_scraped() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {scrape["job_name"] for scrape in config["scrape_configs"]}
    used = {job for rule in alert_rules() for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert used and used <= jobs


def test_prometheus_rule_crd_carries_the_same_rules() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "monitoring.yaml").read_text()))
    (crd,) = [doc for doc in docs if doc["kind"] == "PrometheusRule"]
    assert crd["apiVersion"] == "monitoring.coreos.com/v1"
    assert crd["spec"] == yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
