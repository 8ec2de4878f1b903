"""deploy/grafana: the provisioned datasource and dashboard provider, and a dashboard whose every query parses as
PromQL and selects only the gateway's metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.test_deploy_prometheus import (
    METRICS,
    check_promql,
    metric_family,
    promql_metric_names,
    unknown_metrics,
)

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "sarm.json"
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def exprs() -> dict[str, str]:
    """refId-qualified expressions of every panel and of the query variables."""
    out = {f"{panel['id']}{target['refId']}": target["expr"] for panel in panels() for target in panel["targets"]}
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            out[f"var_{var['name']}"] = var["query"]["query"]
    return out


def as_promql(expr: str) -> str:
    """Grafana's macros and variables replaced the way Grafana does before the query reaches Prometheus."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    match = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", expr)
    return match.group(1) if match else expr  # label_values(selector, label) asks for the selector's series


def test_dashboard_is_valid_dashboard_json() -> None:
    board = dashboard()
    assert board["uid"] == "sarm-gateway" and board["title"] and isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in ("x", "y", "w", "h")), panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_COLUMNS
        columns, rows = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        cells = {(x, y) for x in columns for y in rows}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
    for panel in panels():
        assert panel["datasource"] == DS_REF, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DS_REF and target["refId"] and target["expr"], panel["title"]
    for name in ("job", "instance"):
        assert variables[name]["datasource"] == DS_REF


def test_every_query_is_promql(tmp_path: Path) -> None:
    check_promql({name: as_promql(expr) for name, expr in exprs().items()}, tmp_path)


def test_queries_use_only_gateway_metrics() -> None:
    for name, expr in exprs().items():
        assert not unknown_metrics(as_promql(expr)), f"{name}: {expr}"


def test_every_gateway_metric_is_on_the_dashboard() -> None:
    used = {metric_family(series) for expr in exprs().values() for series in promql_metric_names(as_promql(expr))}
    assert used == set(METRICS)


def test_latency_quantiles_per_pipeline_stage() -> None:
    compact = [" ".join(expr.split()) for expr in exprs().values()]
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(
            expr.startswith(
                f"histogram_quantile({quantile}, sum by (stage, le) (rate(sarm_engine_latency_seconds_bucket{{"
            )
            for expr in compact
        ), quantile


def test_panels_for_operators() -> None:
    text = {panel["title"].lower(): " ".join(t["expr"] for t in panel["targets"]) for panel in panels()}

    def panel_using(*needles: str) -> list[str]:
        return [title for title, expr in text.items() if all(needle in expr for needle in needles)]

    assert panel_using("sarm_cache_hits_total", "sarm_cache_misses_total", "by (tier, kind)")  # hit ratio by tier
    assert panel_using("rate(sarm_grpc_requests_total", "by (method, code)")  # request rate
    assert panel_using('code=~"UNKNOWN|DEADLINE_EXCEEDED')  # error ratio, same codes as the alert
    for metric in (
        "sarm_batcher_batch_size_rows",
        "sarm_engine_in_flight_requests",
        "sarm_batcher_queue_depth_rows",
        "sarm_grpc_active_streams",
        "sarm_service_ready",
        "sarm_model_info",
    ):
        assert panel_using(metric), metric


def test_provisioning_points_at_compose_services() -> None:
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["uid"]
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    assert "prometheus" in compose["services"]
    assert source["url"] == "http://prometheus:9090"
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["services"]["prometheus"]["command"]
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "sarm.yml").read_text())["providers"]
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
