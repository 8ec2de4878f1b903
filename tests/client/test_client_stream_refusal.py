"""A stream the gateway refuses at open (SARM_MAX_STREAMS reached) is `Overloaded` with the server's retry-after in
both clients, every time (issue #13: the asyncio client reported INTERNAL "Internal error from Core" in 11 of 40
runs of a stress run, when its write of the first message lost the race with the server's refusal)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarm.encoders.base import TextEncoder
from sarm_client import AsyncSarmClient, Overloaded, SarmClient, SarmError, Timeout
from tests.client_harness import target
from tests.gateway_harness import INSTRUCTION, TIMEOUT, RunningGateway, episode_frames

LIMIT = 2  # streams the gateway admits
REFUSED = 6  # streams opened beyond it, all at once, per round
ROUNDS = 20
CLIENT_TIMEOUT = Timeout(call=TIMEOUT, step=TIMEOUT, episode=TIMEOUT)
FRAME = episode_frames(1, seed=130)[0]


@pytest.fixture(scope="module")
def limited(cpu_model_repo: Path, text_encoder: TextEncoder) -> Iterator[RunningGateway]:
    running = RunningGateway(cpu_model_repo, text_encoder, max_streams=LIMIT)
    yield running
    running.close()


def outcome(error: BaseException | None) -> str:
    """'overloaded' for the typed refusal with the server's hint; anything else, described for the failure report."""
    if isinstance(error, Overloaded) and error.retry_after is not None and "limit" in str(error):
        return "overloaded"
    return f"{type(error).__name__}({getattr(error, 'code', None)}: {error})"


def test_every_stream_refused_at_open_is_overloaded_in_the_asyncio_client(limited: RunningGateway) -> None:
    async def refused_step(client: AsyncSarmClient) -> str:
        try:
            async with client.stream(INSTRUCTION, fps=10) as episode:
                await episode.step(FRAME)
        except SarmError as error:
            return outcome(error)
        return "admitted"

    async def run() -> list[list[str]]:
        rounds = []
        async with AsyncSarmClient(target(limited), timeout=CLIENT_TIMEOUT) as client:
            held = [client.stream(INSTRUCTION, fps=10) for _ in range(LIMIT)]
            for episode in held:  # both admitted: each answered a step, so the server counts it
                assert len(await episode.step(FRAME)) == 1
            for _ in range(ROUNDS):
                rounds.append(list(await asyncio.gather(*(refused_step(client) for _ in range(REFUSED)))))
            for episode in held:
                await episode.close()
        return rounds

    rounds = asyncio.run(run())
    wrong = [(i, o) for i, results in enumerate(rounds) for o in results if o != "overloaded"]
    assert not wrong, f"{len(wrong)} of {ROUNDS * REFUSED} refused streams were not Overloaded: {wrong[:5]}"


def test_every_stream_refused_at_open_is_overloaded_in_the_blocking_client(limited: RunningGateway) -> None:
    with SarmClient(target(limited), timeout=CLIENT_TIMEOUT) as client:
        held = [client.stream(INSTRUCTION, fps=10) for _ in range(LIMIT)]
        for episode in held:
            assert len(episode.step(FRAME)) == 1
        results = []
        for _ in range(ROUNDS):
            opened = [client.stream(INSTRUCTION, fps=10) for _ in range(REFUSED)]
            for episode in opened:
                try:
                    episode.step(FRAME)
                    results.append("admitted")
                except SarmError as error:
                    results.append(outcome(error))
                episode.close()
        for episode in held:
            episode.close()
    wrong = [o for o in results if o != "overloaded"]
    assert not wrong, f"{len(wrong)} of {ROUNDS * REFUSED} refused streams were not Overloaded: {wrong[:5]}"
