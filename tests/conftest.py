"""Shared fixtures: small synthetic datasets written with our own writer, the real LeRobot fixture, Redis and
gateways. Nothing of the core or the gateway is imported until a fixture needs it, so the client's own tests
(tests/client/conftest.py) run where only sarm-client is installed: no torch, no core, no gateway."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

# `SARM_TESTS_WITHOUT=torch,sarm,...`: run as if those packages were not installed (each import of them fails), to
# check that a suite runs in an environment without them (tests/client/test_client_package.py does).
for _blocked in filter(None, os.environ.get("SARM_TESTS_WITHOUT", "").split(",")):
    sys.modules[_blocked] = None  # type: ignore[assignment]
# MuJoCo picks its GL backend once, at import: headless tests render through Mesa's software EGL.
os.environ.setdefault("MUJOCO_GL", "egl")
# Model repositories that `sarm rabc` exports from checkpoints go to a folder of this test run, not ~/.cache (the
# CLI's subprocesses inherit it).
os.environ.setdefault("SARM_CACHE", tempfile.mkdtemp(prefix="sarm-test-cache-"))

if TYPE_CHECKING:
    from sarm.data.episode import EpisodeData
    from sarm.data.lerobot import LeRobotDataset
    from sarm.encoders.base import TextEncoder
    from tests.gateway_harness import RunningGateway
    from tests.redis_server import RedisServer

CAMERA = "observation.images.top"
LEROBOT_FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "lerobot_aloha_insertion"


def save_tiny_clip(path: Path) -> None:
    """A randomly initialised CLIP with a 2 + 52 token BPE vocab, saved as a user's local copy would be."""
    import torch
    import transformers

    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": 64,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(path)
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (path / "merges.txt").write_text("#version: 0.2\n")


def synthetic_episode(
    length: int, seed: int, stages: tuple[str, ...] = ("reach", "grasp", "lift"), size: tuple[int, int] = (32, 48)
) -> EpisodeData:
    """An episode whose frames (`size` = height, width) encode time (a moving bar) so decoding errors are visible."""
    from sarm.data.annotations import EpisodeAnnotation, Subtask
    from sarm.data.episode import EpisodeData

    rng = np.random.default_rng(seed)
    frames = np.full((length, *size, 3), 40, np.uint8)
    for t in range(length):
        column = int(t / max(length - 1, 1) * 40)
        frames[t, 8:24, column : column + 8] = (220, 120, 30)
    bounds = np.linspace(0, length, len(stages) + 1).round().astype(int)
    subtasks = tuple(Subtask(name, int(s), int(e)) for name, s, e in zip(stages, bounds[:-1], bounds[1:], strict=True))
    return EpisodeData(
        task="pick up the cube",
        frames={CAMERA: frames},
        state=rng.normal(size=(length, 5)).astype(np.float32),
        action=rng.normal(size=(length, 4)).astype(np.float32),
        annotations={"sparse": EpisodeAnnotation(subtasks)},
        episode_columns={"success": seed % 2 == 0, "quality": "clean"},
        frame_columns={"next.reward": np.linspace(0, 1, length, dtype=np.float32)},
    )


@pytest.fixture
def episodes() -> list[EpisodeData]:
    return [synthetic_episode(length, seed) for seed, length in enumerate((30, 21, 44))]


def write_dataset(root: Path, episodes: list[EpisodeData]) -> LeRobotDataset:
    """A new 10 fps dataset at `root` holding `episodes`."""
    from sarm.data.lerobot import LeRobotDataset, LeRobotWriter

    with LeRobotWriter(root, fps=10) as writer:
        for ep in episodes:
            writer.add_episode(ep)
    return LeRobotDataset(root)


def write_embedded(root: Path, episodes: list[EpisodeData]) -> LeRobotDataset:
    """`write_dataset`, then every frame stored as embeddings by the default encoders (what training and eval read)."""
    from sarm.embeddings import embed_dataset
    from sarm.encoders.registry import load_frame_encoder, load_text_encoder

    ds = write_dataset(root, episodes)
    embed_dataset(ds, load_frame_encoder(), load_text_encoder())
    return ds


@pytest.fixture
def dataset(tmp_path: Path, episodes: list[EpisodeData]) -> Path:
    return write_dataset(tmp_path / "dataset", episodes).root


@pytest.fixture
def lerobot_fixture(tmp_path: Path) -> Path:
    """A private copy of the LeRobot-written dataset in shared/ (tests must not modify shared/)."""
    if not LEROBOT_FIXTURE.is_dir():
        pytest.skip(f"the shared LeRobot fixture is not at {LEROBOT_FIXTURE}")
    return Path(shutil.copytree(LEROBOT_FIXTURE, tmp_path / "aloha"))


def rewrite_episodes(root: Path, drop: tuple[str, ...] = (), **replace: list) -> None:
    """Edit the episodes table in place: drop columns, or replace a column with one value per episode."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / "meta/episodes/chunk-000/file-000.parquet"
    rows = pq.read_table(path).to_pylist()
    for i, row in enumerate(rows):
        for column in drop:
            row.pop(column, None)
        for column, values in replace.items():
            row[column] = values[i]
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture(scope="session")
def sarm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained but complete checkpoint for the default encoders, for images of 48x64."""
    from sarm.training.scaffold import untrained_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "ckpt"
    return untrained_checkpoint(path, ["reach", "grasp", "lift"], [0.5, 0.2, 0.3], (48, 64))


@pytest.fixture(scope="session")
def cpu_model_repo(sarm_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sarm.export.model_repo import export_model_repository

    repo = tmp_path_factory.mktemp("cpu") / "repo"
    export_model_repository(sarm_checkpoint, repo, "cpu")
    return repo


@pytest.fixture(scope="session")
def text_encoder() -> TextEncoder:
    """The default instruction encoder (MiniLM, torch on one thread), loaded once."""
    import torch

    from sarm.encoders.registry import load_text_encoder

    torch.set_num_threads(1)
    return load_text_encoder()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, killed at teardown."""
    from tests.redis_server import REDIS_SERVER, RedisServer

    if not Path(REDIS_SERVER).exists():
        pytest.skip(f"redis-server is not installed (looked for {REDIS_SERVER})")
    server = RedisServer()
    yield server
    server.close()


# A gateway on the test repository, shared by a module; modules that need other settings define their own `served`.
@pytest.fixture(scope="module")
def served(cpu_model_repo: Path, text_encoder: TextEncoder) -> Iterator[RunningGateway]:
    from tests.gateway_harness import RunningGateway

    running = RunningGateway(cpu_model_repo, text_encoder)
    yield running
    running.close()


@pytest.fixture
def gated(cpu_model_repo: Path, text_encoder: TextEncoder) -> Iterator[RunningGateway]:
    """A gateway whose encoder waits for `open_gate()`, with room for two calls in flight."""
    from tests.gateway_harness import RunningGateway

    running = RunningGateway(cpu_model_repo, text_encoder, gated=True, max_in_flight=2)
    yield running
    running.open_gate()
    running.close()
