"""The scoring engine shared by every front end: frames → embeddings (cached, micro-batched) → windows → scores
(cached, micro-batched).

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
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar

import numpy as np

from sarm.encoders.base import TextEncoder, check_encoder, fingerprint
from sarm.export.model_repo import read_manifest
from sarm.model.windows import SequenceIndices, sequence_indices
from sarm_gateway.admission import Admission
from sarm_gateway.backends import Backend, HeadsOutput, make_backend
from sarm_gateway.batcher import MicroBatcher
from sarm_gateway.cache import TTLCache
from sarm_gateway.errors import InvalidInput
from sarm_gateway.images import FrameData, content_key, decode
from sarm_gateway.metrics import Metrics
from sarm_gateway.redis_cache import RedisTier, connect
from sarm_gateway.score_cache import ScoreCache, WindowScore
from sarm_gateway.settings import Settings

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


@dataclass(frozen=True)
class Encoded:
    """Encoded frames: embeddings (…, D) and the frames' content keys (…), in the same layout. As an episode's time
    steps, (T, C, D) and (T, C), it is a FrameSource."""

    embeddings: np.ndarray
    keys: np.ndarray  # str objects

    @classmethod
    def join(cls, parts: Sequence[Encoded]) -> Encoded:
        return cls(np.concatenate([p.embeddings for p in parts]), np.concatenate([p.keys for p in parts]))

    def steps(self, cameras: int) -> Encoded:
        """Time-major: (T, C, D) embeddings and (T, C) keys."""
        return Encoded(self.embeddings.reshape(-1, cameras, self.embeddings.shape[-1]), self.keys.reshape(-1, cameras))

    def keys_at(self, indices: np.ndarray) -> np.ndarray:
        return self.keys[indices]

    def embeddings_at(self, indices: np.ndarray) -> np.ndarray:
        return self.embeddings[indices]


class FrameSource(Protocol):
    """An episode's encoded time steps by frame index: content keys (…, C) and embeddings (…, C, D). Windows need
    the keys of every frame but the embeddings only of windows the score cache does not have."""

    def keys_at(self, indices: np.ndarray) -> np.ndarray: ...

    def embeddings_at(self, indices: np.ndarray) -> np.ndarray: ...


def model_version(manifest: dict[str, Any]) -> str:
    """The trained weights' identity: the checkpoint digest (encoder identities are reported beside it)."""
    return str(manifest["checkpoint"]["sha256"][:12])


class Engine:
    def __init__(self, manifest: dict[str, Any], backend: Backend, text_encoder: TextEncoder, settings: Settings):
        check_encoder(text_encoder, manifest["text_encoder"]["id"], manifest["text_encoder"]["version"])
        self.manifest = manifest
        self.backend = backend
        self.settings = settings
        self.version = model_version(manifest)
        self.stage_names: list[str] = manifest["stage_names"]
        self.window_frames: int = manifest["window"]["frames"]
        self.max_rewind: int = manifest["window"]["max_rewind"]
        self.stride_seconds: float = manifest["window"]["stride_seconds"]
        self.num_cameras: int = manifest["num_cameras"]
        self.image_size: tuple[int, int] = (manifest["image"]["height"], manifest["image"]["width"])
        self.frame_dim: int = manifest["frame_encoder"]["dim"]
        self._frame_encoder_id = f"{manifest['frame_encoder']['id']}@{manifest['frame_encoder']['version']}"
        self.text_encoder = text_encoder
        self._text_encoder_id = fingerprint(text_encoder)
        self.metrics = Metrics()
        text_id = f"{manifest['text_encoder']['id']}@{manifest['text_encoder']['version']}"
        self.metrics.model_info(self.version, self._frame_encoder_id, text_id, backend.name)
        # Every front end's unary work shares one bound: a burst over HTTP and gRPC together still gets refused.
        self.work = Admission(settings.max_in_flight, settings.retry_after_ms, "requests")
        self.metrics.in_flight.set_function(lambda: self.work.in_flight)
        ttl = settings.cache_ttl_s
        self.frame_cache: TTLCache[np.ndarray] = TTLCache(settings.frame_cache_entries, ttl)
        self.instruction_cache: TTLCache[np.ndarray] = TTLCache(settings.instruction_cache_entries, ttl)
        # Redis (when configured) behind each: replicas share what any of them encoded or scored.
        self._redis = connect(settings)
        self.score_cache = ScoreCache(settings, self._redis, self.version, self.stage_names)
        self.frame_redis: RedisTier | None = None
        self.instruction_redis: RedisTier | None = None
        if self._redis is not None:
            redis_ttl, backoff = settings.redis_ttl_s, settings.redis_backoff_s
            self.frame_redis = RedisTier(self._redis, f"sarm:frame:{self._frame_encoder_id}:", self.frame_dim,
                                         redis_ttl, backoff)
            self.instruction_redis = RedisTier(self._redis, f"sarm:instruction:{self._text_encoder_id}:",
                                               manifest["text_encoder"]["dim"], redis_ttl, backoff)
        self.metrics.watch_caches([
            ("memory", "frame", self.frame_cache), ("memory", "instruction", self.instruction_cache),
            ("redis", "frame", self.frame_redis), ("redis", "instruction", self.instruction_redis),
            ("memory", "score", self.score_cache.memory), ("redis", "score", self.score_cache.redis),
        ])
        # Decoding and hashing leave the event loop; the text encoder (torch) gets its own thread.
        self._decode_pool = ThreadPoolExecutor(2, thread_name_prefix="sarm-decode")
        self._text_pool = ThreadPoolExecutor(1, thread_name_prefix="sarm-text")
        self._encoding: dict[str, asyncio.Future[np.ndarray | None]] = {}  # frames being encoded, by content key
        # Local models run one batch at a time per worker: coalesce concurrent calls. Triton batches itself.
        self._encode_batcher: MicroBatcher | None = None
        self._heads_batcher: MicroBatcher | None = None
        if not backend.batches_itself:
            delay, workers = settings.max_batch_delay_ms / 1000, settings.inference_workers
            self._encode_batcher = MicroBatcher(self._encode_rows, settings.max_batch_size, delay, workers,
                                                self.metrics.batcher("encoder"))
            self._heads_batcher = MicroBatcher(self._heads_rows, settings.max_batch_size, delay, workers,
                                               self.metrics.batcher("heads"))

    @classmethod
    def from_settings(cls, settings: Settings, text_encoder: TextEncoder | None = None) -> Engine:
        """Load the repository's manifest, start its backend and the instruction encoder it was trained with."""
        repo = Path(settings.model_repo)
        manifest = read_manifest(repo)
        backend = make_backend(settings, repo, manifest)
        if text_encoder is None:  # slow (torch): after the cheap checks
            from sarm.encoders.registry import load_text_encoder

            text_encoder = load_text_encoder(manifest["text_encoder"]["id"])
        return cls(manifest, backend, text_encoder, settings)

    async def close(self) -> None:
        for batcher in (self._encode_batcher, self._heads_batcher):
            if batcher is not None:
                await batcher.close()
        await self.backend.close()
        if self._redis is not None:
            await self._redis.aclose()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._text_pool.shutdown(wait=False, cancel_futures=True)

    async def offload(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking work (decoding, hashing, rendering) on the decode threads, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._decode_pool, lambda: function(*args, **kwargs))

    async def _encode_rows(self, images: np.ndarray) -> tuple[np.ndarray]:
        with self.metrics.stage["encode"].time():
            return (await self.backend.encode(images),)  # the batcher passes tuples of arrays

    async def _heads_rows(self, frames: np.ndarray, text: np.ndarray, lengths: np.ndarray) -> HeadsOutput:
        with self.metrics.stage["heads"].time():
            return await self.backend.heads(frames, text, lengths)

    async def _encode(self, images: np.ndarray) -> np.ndarray:
        if self._encode_batcher is None:
            return (await self._encode_rows(images))[0]
        return (await self._encode_batcher(images))[0]

    async def _heads(self, frames: np.ndarray, text: np.ndarray, lengths: np.ndarray) -> HeadsOutput:
        if self._heads_batcher is None:
            return await self._heads_rows(frames, text, lengths)
        return HeadsOutput(*await self._heads_batcher(frames, text, lengths))

    async def embed_instruction(self, instruction: str) -> Instruction:
        if not instruction.strip():
            raise InvalidInput("instruction is empty: give the task in words, e.g. 'pick up the cube'")
        if len(instruction) > self.settings.max_instruction_chars:
            raise InvalidInput(f"instruction has {len(instruction)} characters; the limit is "
                               f"{self.settings.max_instruction_chars} (SARM_MAX_INSTRUCTION_CHARS)")
        key = f"{self._text_encoder_id}|{instruction}"
        score_key = hashlib.sha256(key.encode()).hexdigest()
        cached = self.instruction_cache.get(key)
        if cached is not None:
            return Instruction(cached, score_key)
        shared = self.instruction_redis
        shared_key = hashlib.sha256(instruction.encode()).hexdigest()  # the tier's prefix names the encoder
        if shared is not None:
            [cached] = await shared.get_many([shared_key])
        if cached is None:
            loop = asyncio.get_running_loop()
            cached = (await loop.run_in_executor(self._text_pool, self.text_encoder.encode, [instruction]))[0]
            if shared is not None:
                await shared.put_many({shared_key: cached})
        self.instruction_cache.put(key, cached)
        return Instruction(cached, score_key)

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
            cached = self.frame_cache.get(key)
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
        self, frames: Sequence[FrameData], missing: dict[str, list[int]], out: np.ndarray, first_index: int,
        lookup_s: float,
    ) -> None:
        """Decode and encode one frame per key into `out`; concurrent calls wanting a key wait for it here.
        `lookup_s`: time spent on the in-process lookup, reported with the Redis lookup as the call's cache stage."""
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[np.ndarray | None]] = {key: loop.create_future() for key in missing}
        self._encoding.update(futures)
        try:
            started = time.perf_counter()
            if self.frame_redis is not None:  # registered above first, so concurrent calls wait, not ask again
                missing = await self._from_redis(self.frame_redis, missing, futures, out)
            self.metrics.stage["cache"].observe(lookup_s + time.perf_counter() - started)
            if not missing:
                return
            firsts = [rows[0] for rows in missing.values()]
            height, width = self.image_size

            def decode_all() -> np.ndarray:
                return np.stack([decode(frames[i], height, width, f"frame {first_index + i}") for i in firsts])

            chosen = [frames[i] for i in firsts]
            inline = all(f.shape is not None for f in chosen) and _small(chosen)  # raw pixels: checks and a copy
            images = decode_all() if inline else await self.offload(decode_all)
            embeddings = await self._encode(images)
            for (key, rows), embedding in zip(missing.items(), embeddings, strict=True):
                row = embedding.copy()  # a row of its own, not a view pinning the whole batch
                self.frame_cache.put(key, row)
                futures[key].set_result(row)
                out[rows] = row
            if self.frame_redis is not None:
                await self.frame_redis.put_many(dict(zip(missing, embeddings, strict=True)))
        finally:
            for key, future in futures.items():
                del self._encoding[key]
                if not future.done():
                    future.set_result(None)

    async def _from_redis(
        self, tier: RedisTier, missing: dict[str, list[int]], futures: dict[str, asyncio.Future[np.ndarray | None]],
        out: np.ndarray,
    ) -> dict[str, list[int]]:
        """Fill `out` with what Redis has (and the in-process tier with it); the keys still missing."""
        stored = await tier.get_many(list(missing))
        left = dict(missing)
        for key, embedding in zip(missing, stored, strict=True):
            if embedding is not None:
                self.frame_cache.put(key, embedding)
                futures[key].set_result(embedding)
                out[left.pop(key)] = embedding
        return left

    async def _heads_scores(self, frames: np.ndarray, text: np.ndarray, lengths: np.ndarray) -> list[WindowScore]:
        """Windows (N, L, C, D) with valid `lengths` (N,) under one instruction embedding → the heads' score of each."""
        text_rows = np.broadcast_to(text.astype(np.float32), (len(frames), len(text)))
        out = await self._heads(frames.astype(np.float32, copy=False), np.ascontiguousarray(text_rows),
                                lengths.astype(np.int64).reshape(-1, 1))
        # Each row copied: a cached score must not pin its whole batch.
        return [WindowScore.of(p.copy(), tau[0], progress[0], confidence[0], self.stage_names)
                for p, tau, progress, confidence in zip(*out, strict=True)]

    async def _score_windows(self, frames: FrameSource, seq: SequenceIndices,
                             instruction: Instruction) -> list[WindowScore]:
        """The windows `seq` from the score cache, or (each key once) from the heads, then cached."""
        started = time.perf_counter()
        keys = self.score_cache.keys(instruction.key, frames.keys_at(seq.indices), seq.lengths)
        found = await self.score_cache.get_many(keys)
        self.metrics.stage["cache"].observe(time.perf_counter() - started)
        first: dict[str, int] = {}  # missing key -> its first window
        for i, (key, score) in enumerate(zip(keys, found, strict=True)):
            if score is None:
                first.setdefault(key, i)
        computed: dict[str, WindowScore] = {}
        if first:
            rows = list(first.values())
            scores = await self._heads_scores(frames.embeddings_at(seq.indices[rows]), instruction.embedding,
                                              seq.lengths[rows])
            computed = dict(zip(first, scores, strict=True))
            await self.score_cache.put_many(computed)
        return [computed[key] if score is None else score for key, score in zip(keys, found, strict=True)]

    async def score_at(
        self, frames: FrameSource, t: Sequence[int], stride: int, instruction: Instruction
    ) -> list[WindowScore]:
        """Score the causal windows ending at frames `t` of an episode starting at frame 0, WINDOW_CHUNK at a time."""
        scores: list[WindowScore] = []
        for start in range(0, len(t), WINDOW_CHUNK):
            seq = sequence_indices(np.asarray(t[start : start + WINDOW_CHUNK]), stride, 0, 0, self.window_frames,
                                   self.max_rewind)
            scores += await self._score_windows(frames, seq, instruction)
        return scores

    def time_steps(self, images: int, what: str) -> int:
        """How many time steps `images` images make, or InvalidInput if the cameras don't add up."""
        if images == 0 or images % self.num_cameras:
            raise InvalidInput(f"{what} has {images} images; send a positive multiple of the model's "
                               f"{self.num_cameras} camera(s): every camera of each time step, time-major")
        return images // self.num_cameras
