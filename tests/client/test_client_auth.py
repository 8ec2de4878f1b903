"""sarm-client's bearer tokens and TLS against real gateways: auth on (per role) and off, TLS, mutual TLS, and the
CLI's --token / --tls-* options."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarm.encoders.base import TextEncoder
from sarm_client import (
    TLS,
    PermissionDenied,
    Retry,
    SarmClient,
    ServingStatus,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from tests.client_harness import CLIENT_ROOT, target
from tests.gateway_harness import INSTRUCTION, TIMEOUT, RunningGateway, episode_frames
from tests.tls import Pki, make_pki

TOKENS = {"controller": "robot-secret", "trainer": "trainer-secret"}
FRAMES = episode_frames(9, seed=80)
QUICK = Timeout(call=5.0, step=TIMEOUT, episode=TIMEOUT)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def guarded(cpu_model_repo: Path, text_encoder: TextEncoder) -> Iterator[RunningGateway]:
    running = RunningGateway(cpu_model_repo, text_encoder, auth_tokens=TOKENS)
    yield running
    running.close()


@pytest.fixture(scope="module")
def tls_served(cpu_model_repo: Path, text_encoder: TextEncoder, pki: Pki) -> Iterator[RunningGateway]:
    running = RunningGateway(cpu_model_repo, text_encoder, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
    yield running
    running.close()


@pytest.fixture(scope="module")
def mutual(cpu_model_repo: Path, text_encoder: TextEncoder, pki: Pki) -> Iterator[RunningGateway]:
    """Mutual TLS and auth together."""
    running = RunningGateway(
        cpu_model_repo,
        text_encoder,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca,
        auth_tokens=TOKENS,
    )
    yield running
    running.close()


def stream_one(client: SarmClient) -> int:
    with client.stream(INSTRUCTION, fps=10) as episode:
        return len(episode.step(FRAMES[0]))


def test_a_roles_token_opens_its_operations_and_no_others(guarded: RunningGateway) -> None:
    with SarmClient(target(guarded), token="robot-secret", timeout=QUICK) as controller:
        assert controller.score_window(INSTRUCTION, FRAMES).stage_name
        assert controller.info().stage_names and stream_one(controller) == 1
    with SarmClient(target(guarded), token="trainer-secret", timeout=QUICK) as trainer:
        assert trainer.score_window(INSTRUCTION, FRAMES).stage_name
        with pytest.raises(PermissionDenied, match="role 'trainer' may not call stream"):
            stream_one(trainer)


def test_no_token_or_a_wrong_one_is_unauthenticated_and_not_retried(guarded: RunningGateway) -> None:
    for token, message in ((None, "authorization: Bearer <token>"), ("robot-secre", "not recognised")):
        with SarmClient(target(guarded), token=token, timeout=QUICK, retry=Retry(attempts=5, backoff=1.0)) as client:
            assert client.health() is ServingStatus.SERVING  # health needs no token
            for call in (lambda: client.score_window(INSTRUCTION, FRAMES), client.info, lambda: stream_one(client)):
                with pytest.raises(Unauthenticated, match=message):
                    call()


def test_tls_with_the_servers_ca_and_a_token_the_server_does_not_ask_for(tls_served: RunningGateway, pki: Pki) -> None:
    with SarmClient(target(tls_served), tls=TLS.from_files(pki.ca), token="unused", timeout=QUICK) as client:
        assert client.health() is ServingStatus.SERVING
        assert client.score_window(INSTRUCTION, FRAMES).stage_name and stream_one(client) == 1


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "system-roots"])
def test_tls_without_trusting_the_server_is_unavailable(tls_served: RunningGateway, tls: bool) -> None:
    with (
        SarmClient(target(tls_served), tls=tls, timeout=QUICK, retry=Retry(backoff=0.01)) as client,
        pytest.raises(Unavailable),
    ):
        client.info()


def test_mutual_tls_needs_the_client_certificate_and_auth_still_applies(mutual: RunningGateway, pki: Pki) -> None:
    with (
        SarmClient(
            target(mutual), tls=TLS.from_files(pki.ca), token="robot-secret", timeout=QUICK, retry=Retry(backoff=0.01)
        ) as anonymous,
        pytest.raises(Unavailable),
    ):
        anonymous.info()
    certified = TLS.from_files(pki.ca, pki.client_cert, pki.client_key)
    with SarmClient(target(mutual), tls=certified, token="robot-secret", timeout=QUICK) as client:
        assert client.info().stage_names and stream_one(client) == 1
    with SarmClient(target(mutual), tls=certified, timeout=QUICK) as client, pytest.raises(Unauthenticated):
        client.info()


def test_a_client_certificate_needs_its_key(pki: Pki) -> None:
    with pytest.raises(ValueError, match="private key"):
        TLS.from_files(pki.ca, pki.client_cert)


def sarm_client(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(CLIENT_ROOT)}
    env.pop("SARM_TOKEN", None)
    if token is not None:
        env["SARM_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "sarm_client", *args], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def test_cli_token_and_mutual_tls(mutual: RunningGateway, pki: Pki) -> None:
    tls = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
    base = ["--target", target(mutual), *tls]
    assert sarm_client(*base, "health").stdout == "SERVING\n"
    by_option = sarm_client(*base, "--token", "robot-secret", "info", "--json")
    by_env = sarm_client(*base, "info", "--json", token="robot-secret")
    assert by_option.returncode == by_env.returncode == 0 and by_option.stdout == by_env.stdout
    refused = sarm_client(*base, "info", token="trainer-secre")
    assert refused.returncode == 1 and refused.stderr.startswith("sarm-client: error: UNAUTHENTICATED: ")
    half = sarm_client("--target", target(mutual), "--tls-cert", str(pki.client_cert), "health")
    assert half.returncode == 1 and "private key" in half.stderr and half.stderr.count("\n") == 1
