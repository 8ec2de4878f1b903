"""Bearer-token auth per client role, and TLS (plain and mutual), on a real gateway with real grpc clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from sarm.encoders.base import TextEncoder
from sarm_gateway.auth import ROLE_OPERATIONS, Authenticator, Operation
from sarm_gateway.errors import PermissionDenied, Unauthenticated
from sarm_gateway.settings import Settings
from sarm_gateway.v1 import sarm_pb2 as pb
from sarm_gateway.v1 import sarm_pb2_grpc as pb_grpc
from tests.gateway_harness import INSTRUCTION, TIMEOUT, RunningGateway, episode_frames, raw, window_request
from tests.tls import Pki, make_pki

TOKENS = {"controller": "robot-secret", "trainer": "trainer-secret", "evaluator": "eval-secret"}
WINDOW = window_request([raw(f) for f in episode_frames(9, seed=11)])


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code(), caught.value.details()


@pytest.fixture(scope="module")
def guarded(cpu_model_repo: Path, text_encoder: TextEncoder) -> Iterator[RunningGateway]:
    running = RunningGateway(cpu_model_repo, text_encoder, auth_tokens=TOKENS)
    yield running
    running.close()


def test_authenticator_roles() -> None:
    auth = Authenticator(TOKENS)
    assert auth.authorize("Bearer robot-secret", Operation.STREAM) == "controller"
    assert auth.authorize("bearer   trainer-secret ", Operation.RABC) == "trainer"
    with pytest.raises(Unauthenticated, match="requires a token"):
        auth.authorize(None, Operation.INFO)
    with pytest.raises(Unauthenticated, match="requires a token"):
        auth.authorize("Basic robot-secret", Operation.INFO)
    with pytest.raises(Unauthenticated, match="not recognised"):
        auth.authorize("Bearer robot-secre", Operation.INFO)
    with pytest.raises(PermissionDenied, match="role 'controller' may not call rabc"):
        auth.authorize("Bearer robot-secret", Operation.RABC)
    with pytest.raises(PermissionDenied, match="role 'trainer' may not call stream"):
        auth.authorize("Bearer trainer-secret", Operation.STREAM)
    assert Authenticator({}).authorize(None, Operation.RABC) is None  # auth off
    assert ROLE_OPERATIONS["admin"] == frozenset(Operation)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ({"robot": "x"}, "unknown role"),
        ({"controller": " "}, "empty token"),
        ({"controller": "same", "trainer": "same"}, "share a token"),
    ],
)
def test_bad_token_settings_are_refused(tokens: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(auth_tokens=tokens)


def test_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SARM_AUTH_TOKENS", '{"controller": "from-env"}')
    assert Settings().auth_tokens == {"controller": "from-env"}


def test_calls_without_a_good_token_are_unauthenticated(guarded: RunningGateway) -> None:
    stub = guarded.stub
    code, details = code_of(lambda: stub.ScoreWindow(WINDOW, timeout=TIMEOUT))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization: Bearer" in details
    code, details = code_of(
        lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT, metadata=bearer("guess"))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "not recognised" in details
    opening = pb.StreamEpisodeRequest(open=pb.EpisodeOpen(instruction=INSTRUCTION, fps=10))
    code, _ = code_of(lambda: list(stub.StreamEpisode(iter([opening]), timeout=TIMEOUT)))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert guarded.gateway.deps.work.in_flight == 0  # refused before taking a slot


def test_each_role_calls_what_it_may(guarded: RunningGateway) -> None:
    stub = guarded.stub
    reply = stub.ScoreWindow(WINDOW, timeout=TIMEOUT, metadata=bearer("robot-secret"))
    assert 0.0 <= reply.score.progress <= 1.0
    opening = pb.StreamEpisodeRequest(open=pb.EpisodeOpen(instruction=INSTRUCTION, fps=10))
    step = pb.StreamEpisodeRequest(step=pb.FrameStep(frames=[raw(episode_frames(1, seed=3)[0])]))
    [response] = stub.StreamEpisode(iter([opening, step]), timeout=TIMEOUT, metadata=bearer("robot-secret"))
    assert [s.frame_index for s in response.scores] == [0]
    assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT, metadata=bearer("eval-secret")).stage_names
    code, details = code_of(
        lambda: list(stub.StreamEpisode(iter([opening, step]), timeout=TIMEOUT, metadata=bearer("trainer-secret")))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "role 'trainer' may not call stream" in details


def test_health_needs_no_token(guarded: RunningGateway) -> None:
    health = health_pb2_grpc.HealthStub(guarded.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="sarm.v1.RewardService"), timeout=TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_stub(port: int, pki: Pki, client_cert: bool) -> tuple[grpc.Channel, pb_grpc.RewardServiceStub]:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client_key.read_bytes() if client_cert else None,
        certificate_chain=pki.client_cert.read_bytes() if client_cert else None,
    )
    channel = grpc.secure_channel(f"localhost:{port}", credentials)
    return channel, pb_grpc.RewardServiceStub(channel)


def test_tls(cpu_model_repo: Path, text_encoder: TextEncoder, pki: Pki) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
    try:
        channel, stub = tls_stub(running.gateway.port, pki, client_cert=False)
        with channel:
            assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT).stage_names
        # A plaintext client cannot talk to a TLS port.
        code, _ = code_of(lambda: running.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        running.close()


def test_mutual_tls_needs_a_client_certificate(cpu_model_repo: Path, text_encoder: TextEncoder, pki: Pki) -> None:
    running = RunningGateway(
        cpu_model_repo,
        text_encoder,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca,
    )
    try:
        channel, stub = tls_stub(running.gateway.port, pki, client_cert=True)
        with channel:
            assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT).stage_names
        channel, stub = tls_stub(running.gateway.port, pki, client_cert=False)
        with channel:
            code, _ = code_of(lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        running.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tls_cert_file": "cert"}, "needs both"),
        ({"tls_client_ca_file": "ca"}, "mutual TLS"),
        ({"tls_cert_file": "nope.pem", "tls_key_file": "nope.key"}, "not a readable file"),
    ],
)
def test_incomplete_tls_settings_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)  # type: ignore[arg-type]
