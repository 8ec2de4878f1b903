"""The scoring engine shared by every front end (gRPC, HTTP, RA-BC jobs, `sarm rabc`, Ray workers): frames →
embeddings (cached, micro-batched) → windows → scores (cached, micro-batched), on a pluggable backend.

Every frame is encoded at most once per cache lifetime: frames are keyed by content, looked up, and only the
misses (deduplicated) go to the encoder. Windows are assembled from embeddings by `sequence_indices`, keyed by
their frames' content keys and the instruction, looked up in the score cache, and only the misses (deduplicated)
go to the heads.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, ParamSpec, Protocol, TypeVar

import numpy as np
from redis.asyncio import Redis

from sarm.encoders.base import TextEncoder, check_encoder, fingerprint
from sarm.lerobot.windows import centered_windows
from sarm.manifest import Manifest, read_manifest
from sarm.model.windows import sequence_indices
from sarm.scoring.backends import Backend, make_backend
from sarm.scoring.batcher import MicroBatcher
from sarm.scoring.cache import Tiered, TTLCache
from sarm.scoring.errors import InvalidInput, NotLive
from sarm.scoring.images import FrameData, content_key, decode
from sarm.scoring.metrics import EngineMetrics
from sarm.scoring.options import EngineOptions
from sarm.scoring.redis_cache import RedisTier, connect
from sarm.scoring.score_cache import DenseScore, WindowScore, window_keys

# Hashing or copying this many bytes takes well under a millisecond: cheaper on the event loop than a hop to a
# thread. Larger inputs, and every JPEG/PNG decode, leave the loop.
INLINE_BYTES = 256 * 1024
# Windows assembled per heads call: bounds the memory of a long episode's curve (256 × 13 × 1280 floats ≈ 17 MB).
WINDOW_CHUNK = 256

P = ParamSpec("P")
R = TypeVar("R")


def _small(frames: Sequence[FrameData]) -> bool:
    return sum(len(f.data) for f in frames) <= INLINE_BYTES


class Instruction(NamedTuple):
    embedding: np.ndarray  # (D_text,)
    key: str  # the text encoder id@version and the text, hashed: what the score cache knows the instruction by
    task: str = ""  # the known task's instruction it matched ("" for a model whose one task names none)
    similarity: float = 1.0  # cosine similarity to that task's instruction


def instruction_key(text_encoder: str, instruction: str) -> str:
    """What the score cache knows an instruction by: its text encoder (id@version) and its text, hashed."""
    return hashlib.sha256(f"{text_encoder}|{instruction}".encode()).hexdigest()


class UnknownTask(InvalidInput):
    """An instruction too far from every task the model knows: its scores would look real and mean nothing."""


@dataclass(frozen=True)
class Encoded:
    """Encoded frames: embeddings (…, D) and the frames' content keys (…), in the same layout. As an episode's time
    steps, (T, C, D) and (T, C), with the joint state (T, S) of a model that reads it, it is a FrameSource."""

    embeddings: np.ndarray
    keys: np.ndarray  # str objects
    state: np.ndarray | None = None  # (T, S) float32 raw joint state, time-major

    def with_state(self, state: np.ndarray | None) -> Encoded:
        """The time steps with their joint state (T, S); each step's keys then name its state too, so that a
        window's score key covers everything the heads see."""
        if state is None:
            return self
        digests = [hashlib.sha256(row.tobytes()).hexdigest()[:16] for row in state]
        keys = np.array([[f"{k}|s{d}" for k in row] for row, d in zip(self.keys, digests, strict=True)], object)
        return Encoded(self.embeddings, keys, state)

    def state_at(self, indices: np.ndarray) -> np.ndarray | None:
        return None if self.state is None else self.state[indices]

    @classmethod
    def join(cls, parts: Sequence[Encoded]) -> Encoded:
        return cls(np.concatenate([p.embeddings for p in parts]), np.concatenate([p.keys for p in parts]))

    def steps(self, cameras: int) -> Encoded:
        """Time-major: (T, C, D) embeddings and (T, C) keys."""
        return Encoded(self.embeddings.reshape(-1, cameras, self.embeddings.shape[-1]), self.keys.reshape(-1, cameras))

    @classmethod
    def stored(cls, embeddings: np.ndarray, source: str) -> Encoded:
        """Time steps (T, C, D) read from an embedding store, keyed by `source` (dataset and episode) and position:
        a store is per dataset and encoder, so its rows' keys are unique where they meet in a cache."""
        steps, cameras = embeddings.shape[:2]
        keys = np.array([[f"{source}|{t}|{c}" for c in range(cameras)] for t in range(steps)], dtype=object)
        return cls(embeddings, keys)

    def keys_at(self, indices: np.ndarray) -> np.ndarray:
        return self.keys[indices]

    def embeddings_at(self, indices: np.ndarray) -> np.ndarray:
        return self.embeddings[indices]


class FrameSource(Protocol):
    """An episode's encoded time steps by frame index: content keys (…, C) and embeddings (…, C, D). Windows need
    the keys of every frame but the embeddings only of windows the score cache does not have."""

    def keys_at(self, indices: np.ndarray) -> np.ndarray: ...

    def embeddings_at(self, indices: np.ndarray) -> np.ndarray: ...

    def state_at(self, indices: np.ndarray) -> np.ndarray | None: ...


@dataclass
class EngineCaches:
    """The engine's three caches, each an in-process tier with Redis behind it when configured."""

    frames: Tiered[np.ndarray]  # embeddings by frame content key
    instructions: Tiered[np.ndarray]  # embeddings by instruction
    scores: Tiered[WindowScore]  # window scores by window key
    redis: Redis | None  # the client the Redis tiers share; the engine closes it

    @classmethod
    def build(cls, options: EngineOptions, manifest: Manifest, text_encoder: str) -> EngineCaches:
        """Redis prefixes name what made the values (frame encoder, text encoder, model version), so replicas
        serving other models never read each other's entries."""
        ttl, client = options.cache_ttl_s, connect(options)

        def shared(prefix: str, dim: int) -> RedisTier | None:
            if client is None:
                return None
            return RedisTier(client, prefix, dim, options.redis_ttl_s, options.redis_backoff_s)

        def vector(value: np.ndarray) -> np.ndarray:
            return value

        stages, dense_stages = list(manifest.stage_names), list(manifest.dense_stage_names)
        return cls(
            Tiered(
                TTLCache(options.frame_cache_entries, ttl),
                shared(f"sarm:frame:{manifest.frame_encoder.fingerprint}:", manifest.frame_encoder.dim),
                vector,
                vector,
            ),
            Tiered(
                TTLCache(options.instruction_cache_entries, ttl),
                shared(f"sarm:instruction:{text_encoder}:", manifest.text_encoder.dim),
                vector,
                vector,
            ),
            Tiered(
                TTLCache(options.score_cache_entries, ttl),
                shared(f"sarm:score:{manifest.version}:", WindowScore.vector_size(len(stages), len(dense_stages))),
                WindowScore.to_vector,
                lambda v: WindowScore.from_vector(v, stages, dense_stages),
            ),
            client,
        )


class Engine:
    def __init__(
        self,
        manifest: Manifest,
        backend: Backend,
        text_encoder: TextEncoder,
        options: EngineOptions,
        caches: EngineCaches,
        metrics: EngineMetrics,
    ) -> None:
        check_encoder(text_encoder, manifest.text_encoder.id, manifest.text_encoder.version)
        self.manifest = manifest
        self.backend = backend
        self.options = options
        self.version = manifest.version
        self.stage_names = list(manifest.stage_names)
        self.window_frames = manifest.window.frames
        self.max_rewind = manifest.window.max_rewind
        self.num_cameras = manifest.num_cameras
        self.image_size = manifest.image_size
        self.frame_dim = manifest.frame_encoder.dim
        self._frame_encoder_id = manifest.frame_encoder.fingerprint
        self.text_encoder = text_encoder
        self._text_encoder_id = fingerprint(text_encoder)
        self.caches = caches
        self.metrics = metrics
        # Matching needs every task's instruction; a model trained with none (one task, shorthand) scores any.
        self._known = [t.instruction for t in manifest.tasks] if all(t.instruction for t in manifest.tasks) else []
        self._known_embeddings: np.ndarray | None = None  # (tasks, D_text) unit vectors, on first use
        metrics.model_info(self.version, self._frame_encoder_id, manifest.text_encoder.fingerprint, backend.name)
        metrics.watch_caches(
            [
                (tier, kind, cache)
                for kind, tiered in (
                    ("frame", caches.frames),
                    ("instruction", caches.instructions),
                    ("score", caches.scores),
                )
                for tier, cache in (("memory", tiered.memory), ("redis", tiered.redis))
            ]
        )
        # Decoding and hashing leave the event loop; the text encoder (torch) gets its own thread.
        self._decode_pool = ThreadPoolExecutor(2, thread_name_prefix="sarm-decode")
        self._text_pool = ThreadPoolExecutor(1, thread_name_prefix="sarm-text")
        self._encoding: dict[str, asyncio.Future[np.ndarray | None]] = {}  # frames being encoded, by content key
        # Local models run one batch at a time per worker: coalesce concurrent calls. Triton batches itself.
        self._encode_batcher: MicroBatcher | None = None
        self._heads_batcher: MicroBatcher | None = None
        if not backend.batches_itself:
            delay, workers = options.max_batch_delay_ms / 1000, options.inference_workers
            self._encode_batcher = MicroBatcher(
                self._encode_rows, options.max_batch_size, delay, workers, metrics.batcher("encoder")
            )
            self._heads_batcher = MicroBatcher(
                self._heads_rows, options.max_batch_size, delay, workers, metrics.batcher("heads")
            )

    @classmethod
    def open(
        cls,
        repo: Path,
        options: EngineOptions,
        metrics: EngineMetrics | None = None,
        text_encoder: TextEncoder | None = None,
        backend: Backend | None = None,
    ) -> Engine:
        """Read the repository's manifest, start the backend `options` name (unless given), and load the instruction
        encoder it was trained with (unless given); caches as `options` say. Metrics go to a registry of their own
        unless given."""
        manifest = read_manifest(repo)
        backend = backend or make_backend(options, repo, manifest)
        if text_encoder is None:  # slow (torch): after the cheap checks
            from sarm.encoders.registry import text_encoder_for

            text_encoder = text_encoder_for(manifest.text_encoder)
        caches = EngineCaches.build(options, manifest, fingerprint(text_encoder))
        return cls(manifest, backend, text_encoder, options, caches, metrics or EngineMetrics())

    async def close(self) -> None:
        for batcher in (self._encode_batcher, self._heads_batcher):
            if batcher is not None:
                await batcher.close()
        await self.backend.close()
        if self.caches.redis is not None:
            await self.caches.redis.aclose()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._text_pool.shutdown(wait=False, cancel_futures=True)

    async def offload(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking work (decoding, hashing, rendering) on the decode threads, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._decode_pool, lambda: function(*args, **kwargs))

    async def _encode_rows(self, images: np.ndarray) -> tuple[np.ndarray]:
        with self.metrics.stage["encode"].time():
            return (await self.backend.encode(images),)  # the batcher passes tuples of arrays

    async def _heads_rows(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        with self.metrics.stage["heads"].time():
            return await self.backend.heads(*inputs)

    async def _encode(self, images: np.ndarray) -> np.ndarray:
        if self._encode_batcher is None:
            return (await self._encode_rows(images))[0]
        return (await self._encode_batcher(images))[0]

    async def _heads(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        if self._heads_batcher is None:
            return await self._heads_rows(*inputs)
        return tuple(await self._heads_batcher(*inputs))

    async def embed_instruction(self, instruction: str) -> Instruction:
        if not instruction.strip():
            raise InvalidInput("instruction is empty: give the task in words, e.g. 'pick up the cube'")
        if len(instruction) > self.options.max_instruction_chars:
            raise InvalidInput(
                f"instruction has {len(instruction)} characters; the limit is "
                f"{self.options.max_instruction_chars} (SARM_MAX_INSTRUCTION_CHARS)"
            )
        key = hashlib.sha256(instruction.encode()).hexdigest()  # the tiers' prefix names the encoder
        [cached] = await self.caches.instructions.get_many([key])
        if cached is None:
            loop = asyncio.get_running_loop()
            cached = (await loop.run_in_executor(self._text_pool, self.text_encoder.encode, [instruction]))[0]
            await self.caches.instructions.put_many({key: cached})
        task, similarity = await self._match(instruction, cached)
        return Instruction(cached, instruction_key(self._text_encoder_id, instruction), task, similarity)

    async def _match(self, instruction: str, embedding: np.ndarray) -> tuple[str, float]:
        """The known task most similar to the instruction (cosine of the text encoder's embeddings: what the heads
        select the task by), or UnknownTask below `task_match_min`."""
        if not self._known:
            return "", 1.0
        if self._known_embeddings is None:
            loop = asyncio.get_running_loop()
            known = await loop.run_in_executor(self._text_pool, self.text_encoder.encode, self._known)
            self._known_embeddings = _unit(np.asarray(known, np.float64))
        similarities = self._known_embeddings @ _unit(np.asarray(embedding, np.float64)[None])[0]
        best = int(similarities.argmax())
        if similarities[best] < self.options.task_match_min:
            self.metrics.task_refusals.inc()
            listed = "; ".join(f"'{t}'" for t in self._known)
            raise UnknownTask(
                f"instruction '{instruction}' matches no task this model knows (best: "
                f"'{self._known[best]}', similarity {similarities[best]:.2f} < "
                f"{self.options.task_match_min:.2f}, SARM_TASK_MATCH_MIN); known instructions: {listed}"
            )
        return self._known[best], float(similarities[best])

    async def encode(self, frames: Sequence[FrameData], first_index: int = 0) -> Encoded:
        """(N, D) embeddings and (N,) content keys of `frames`; only frames missing from the cache, and not being
        encoded by a concurrent call, are decoded and encoded, once each. `first_index` numbers the frames in error
        messages."""
        if not frames:
            raise InvalidInput("no frames: send at least one image")
        started = time.perf_counter()

        def hash_all() -> list[str]:
            return [content_key(f, self._frame_encoder_id) for f in frames]

        keys = hash_all() if _small(frames) else await self.offload(hash_all)
        out = np.empty((len(frames), self.frame_dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        joined: dict[str, tuple[asyncio.Future[np.ndarray | None], list[int]]] = {}  # being encoded by another call
        for i, key in enumerate(keys):
            cached = self.caches.frames.memory.get(key)
            if cached is not None:
                out[i] = cached
            elif key in self._encoding:
                joined.setdefault(key, (self._encoding[key], []))[1].append(i)
            else:
                missing.setdefault(key, []).append(i)
        lookup_s = time.perf_counter() - started
        if missing:
            await self._encode_missing(frames, missing, out, first_index, lookup_s)
        else:
            self.metrics.stage["cache"].observe(lookup_s)
        for future, rows in joined.values():
            embedding = await asyncio.shield(future)
            if embedding is None:  # the call encoding it gave up (cancelled, bad input): encode it here
                embedding = (await self.encode([frames[rows[0]]], first_index + rows[0])).embeddings[0]
            out[rows] = embedding
        return Encoded(out, np.array(keys, dtype=object))

    async def _encode_missing(
        self,
        frames: Sequence[FrameData],
        missing: dict[str, list[int]],
        out: np.ndarray,
        first_index: int,
        lookup_s: float,
    ) -> None:
        """Decode and encode one frame per key into `out`; concurrent calls wanting a key wait for it here.
        `lookup_s`: time spent on the in-process lookup, reported with the Redis lookup as the call's cache stage."""
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[np.ndarray | None]] = {key: loop.create_future() for key in missing}
        self._encoding.update(futures)
        try:
            started = time.perf_counter()
            # Registered above first, so concurrent calls wait for these keys rather than ask Redis again.
            for key, embedding in (await self.caches.frames.shared(list(missing))).items():
                futures[key].set_result(embedding)
                out[missing.pop(key)] = embedding
            self.metrics.stage["cache"].observe(lookup_s + time.perf_counter() - started)
            if not missing:
                return
            firsts = [rows[0] for rows in missing.values()]
            (height, width), resize = self.image_size, self.manifest.image_resize

            def decode_all() -> np.ndarray:
                return np.stack([decode(frames[i], height, width, f"frame {first_index + i}", resize) for i in firsts])

            chosen = [frames[i] for i in firsts]
            # Raw pixels at the model's size need only checks and a copy; anything else leaves the loop.
            inline = resize == "exact" and all(f.shape is not None for f in chosen) and _small(chosen)
            images = decode_all() if inline else await self.offload(decode_all)
            embeddings = await self._encode(images)
            rows = {key: embedding.copy() for key, embedding in zip(missing, embeddings, strict=True)}  # not views
            for key, row in rows.items():  # pinning the whole batch
                futures[key].set_result(row)
                out[missing[key]] = row
            await self.caches.frames.put_many(rows)
        finally:
            for key, future in futures.items():
                del self._encoding[key]
                if not future.done():
                    future.set_result(None)

    def state(self, values: Sequence[float] | np.ndarray, steps: int, what: str) -> np.ndarray | None:
        """(steps, state_dim) float32 joint state from flat time-major `values`, or None for a model that reads no
        state (any sent is then unused). A state model without it is refused: zeros would score a different robot."""
        dim = self.manifest.state_dim
        if not dim:
            return None
        flat = np.asarray(values, np.float32).ravel()
        if flat.size != steps * dim:
            raise InvalidInput(
                f"{what}: this model reads joint state, {dim} values per time step; send `state` with "
                f"{steps} × {dim} = {steps * dim} values, time-major (got {flat.size})"
            )
        if not np.isfinite(flat).all():
            raise InvalidInput(f"{what}: state has NaN or infinite values; send finite joint readings")
        return flat.reshape(steps, dim)

    def _feeds(self, frames: np.ndarray, text: np.ndarray, lengths: np.ndarray, state: np.ndarray | None) -> tuple:
        """The heads graph's inputs (manifest.heads_inputs, in order) for windows (N, L, C, D)."""
        text_rows = np.ascontiguousarray(np.broadcast_to(text.astype(np.float32), (len(frames), len(text))))
        frames = frames.astype(np.float32, copy=False)
        rows = state.astype(np.float32, copy=False) if state is not None else None
        if self.manifest.architecture == "lerobot-sarm":
            assert rows is not None  # checked when the windows were gathered
            return frames[:, :, 0], text_rows, rows
        ours = (frames, text_rows, lengths.astype(np.int64).reshape(-1, 1))
        return ours if rows is None else (*ours, rows)

    def _scores(self, outputs: tuple[np.ndarray, ...]) -> list[WindowScore]:
        """Each window's WindowScore from the heads' outputs (manifest.heads_outputs, in order); each row is copied,
        so that a cached score does not pin its whole batch."""
        if self.manifest.architecture != "lerobot-sarm":
            return [
                WindowScore.of(p.copy(), tau[0], progress[0], confidence[0], self.stage_names)
                for p, tau, progress, confidence in zip(*outputs, strict=True)
            ]
        heads = dict(zip(self.manifest.heads, (outputs[i : i + 3] for i in range(0, len(outputs), 3)), strict=True))
        probs, tau, progress = heads["sparse"]
        names = self.manifest.dense_stage_names
        dense: list[DenseScore | None] = [None] * len(probs)
        if "dense" in heads:
            dense = [DenseScore.of(p.copy(), t[0], g[0], names) for p, t, g in zip(*heads["dense"], strict=True)]
        # A LeRobot SARM has no confidence output: the predicted stage's probability, as ours defines it.
        return [
            WindowScore.of(p.copy(), t[0], g[0], float(p.max()), self.stage_names, d)
            for p, t, g, d in zip(probs, tau, progress, dense, strict=True)
        ]

    async def _score_windows(
        self, frames: FrameSource, indices: np.ndarray, lengths: np.ndarray, instruction: Instruction
    ) -> list[WindowScore]:
        """The windows of time steps `indices` (N, L) with valid `lengths` (N,), from the score cache, or (each key
        once) from the heads, then cached."""
        started = time.perf_counter()
        keys = window_keys(self.version, instruction.key, frames.keys_at(indices), lengths)
        found = await self.caches.scores.get_many(keys)
        self.metrics.stage["cache"].observe(time.perf_counter() - started)
        first: dict[str, int] = {}  # missing key -> its first window
        for i, (key, score) in enumerate(zip(keys, found, strict=True)):
            if score is None:
                first.setdefault(key, i)
        computed: dict[str, WindowScore] = {}
        if first:
            rows = indices[list(first.values())]
            state = frames.state_at(rows)
            if self.manifest.state_dim and state is None:
                raise InvalidInput(
                    f"this model reads joint state ({self.manifest.state_dim} values per time step): send `state` "
                    "with the frames; it cannot score frames alone"
                )
            outputs = await self._heads(
                *self._feeds(frames.embeddings_at(rows), instruction.embedding, lengths[list(first.values())], state)
            )
            computed = dict(zip(first, self._scores(outputs), strict=True))
            await self.caches.scores.put_many(computed)
        return [computed[key] if score is None else score for key, score in zip(keys, found, strict=True)]

    async def score_at(
        self, frames: FrameSource, t: Sequence[int], stride: int, instruction: Instruction, length: int | None = None
    ) -> list[WindowScore]:
        """Score the windows of frames `t` of an episode starting at frame 0, WINDOW_CHUNK at a time: causal windows
        ending at t, or (a centred model) centred on t within the episode's `length` time steps."""
        window = self.manifest.window
        if not window.live and length is None:
            raise NotLive(
                "this model's window is centred (it reads frames after t): score whole episodes (ScoreFrames, "
                "video upload, RA-BC), not live streams"
            )
        scores: list[WindowScore] = []
        for start in range(0, len(t), WINDOW_CHUNK):
            indices, lengths = self.windows(np.asarray(t[start : start + WINDOW_CHUNK]), stride, length)
            scores += await self._score_windows(frames, indices, lengths, instruction)
        return scores

    def windows(self, t: np.ndarray, stride: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The time steps (N, L) of frames `t`'s windows and their valid positions (N,): causal windows ending at t,
        or (a centred model) centred on t within the episode's `length` time steps."""
        window = self.manifest.window
        if window.live:
            seq = sequence_indices(t, stride, 0, 0, self.window_frames, self.max_rewind)
            return seq.indices, seq.lengths
        assert length is not None  # score_at refuses a centred model without it
        return centered_windows(t, stride, window.frames - 1, length), np.full(len(t), window.frames, np.int64)

    def time_steps(self, images: int, what: str) -> int:
        """How many time steps `images` images make, or InvalidInput if the cameras don't add up."""
        if images == 0 or images % self.num_cameras:
            raise InvalidInput(
                f"{what} has {images} images; send a positive multiple of the model's "
                f"{self.num_cameras} camera(s): every camera of each time step, time-major"
            )
        return images // self.num_cameras


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
