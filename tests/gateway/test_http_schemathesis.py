"""Property-based tests of the HTTP API from its own OpenAPI schema (schemathesis): valid and invalid requests to
every operation, against a real server; none may get a 5xx, and every answer must match the documented schema.

Strategies are drawn per operation with hypothesis directly: schemathesis' pytest plugin does not run on pytest 9.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (  # type: ignore[attr-defined]  # registered checks, resolved by name
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from sarm.encoders.base import TextEncoder
from tests.gateway_harness import RunningGateway

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [
    "livez",
    "readyz",
    "metrics",
    "getModelInfo",
    "scoreVideo",
    "createRabcJob",
    "getRabcJob",
    "cancelRabcJob",
    "getRabcJobResult",
]


@pytest.fixture(scope="module")
def served(
    cpu_model_repo: Path, text_encoder: TextEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    running = RunningGateway(
        cpu_model_repo,
        text_encoder,
        http_port=0,
        upload_dir=tmp_path_factory.mktemp("up"),
        max_upload_bytes=256 * 1024,
        data_root=tmp_path_factory.mktemp("no-datasets"),
    )
    yield running
    running.close()
    assert list(running.settings.upload_dir.iterdir()) == []  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def api_schema(served: RunningGateway) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{served.http_url}/openapi.json")


# Negative cases need inputs to break: the upload and the job request have them.
CASES = [(op, schemathesis.GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, schemathesis.GenerationMode.NEGATIVE) for op in ("scoreVideo", "createRabcJob")
]


@pytest.mark.parametrize(("operation_id", "mode"), CASES)
def test_no_server_errors_and_answers_match_the_schema(
    api_schema: schemathesis.BaseSchema, operation_id: str, mode: schemathesis.GenerationMode
) -> None:
    operation = api_schema.find_operation_by_id(operation_id)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS, timeout=30)

    check()
