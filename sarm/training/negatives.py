"""Instructions for the wrong-instruction augmentation: a per-run pool of generated distractors.

The augmentation swaps in an instruction the video does not show and trains every target to 0, so the
model learns that progress belongs to the instruction, not to the video alone. A fixed list of 16
phrases (the embedding store's) is too few: the model can learn those 16 embeddings by heart and still
give any new instruction the video's progress. So each run composes a few hundred phrases from verbs,
objects and places (the official code draws a verb plus random words per sample, with Faker; ours are
embedded once at the start of training, since a training step never runs an encoder), and the sampler
also uses the other tasks' instructions of a multi-task run (see samples.WindowSampler).

Generated phrases too close to a trained task's instruction (cosine ≥ `MAX_SIMILARITY`) are dropped: a
paraphrase of the task shown must keep its progress, not be trained to 0.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from sarm.encoders.base import TextEncoder, check_encoder
from sarm.encoders.registry import load_text_encoder


def _items(text: str) -> tuple[str, ...]:
    """A vocabulary written as "a|b|c" (one line of source holds many entries)."""
    return tuple(text.split("|"))


VERBS = _items(
    "pick up|put down|push|pull|lift|lower|rotate|turn|press|slide|wipe|stack|pour|hang|throw|grab|shake|"
    "flip|knock over|carry|drop|squeeze|unscrew|plug in|sort|hide|wash|cut|fill|empty"
)
OBJECTS = _items(
    "the cup|the mug|the towel|the bottle|the book|the plate|the bowl|the spoon|the apple|the banana|"
    "the sponge|the shoe|the lamp|the pillow|the remote control|the kettle|the pan|the scissors|"
    "the marker|the stapler|the can|the jar|the key|the phone|the blanket|the toy car|the dice|the hat|"
    "the bucket|the glass"
)
PLACES = _items(
    "||| on the table| into the sink| onto the shelf| next to the bowl| under the chair| to the left|"
    " to the right| into the basket| behind the box| off the counter| near the wall"
)
# Unrelated to manipulation altogether: everyday requests and word salad.
OTHER = _items(
    "sing a song about the ocean|count the clouds in the sky|walk the dog around the park|"
    "call your sister tonight|read the newspaper aloud|write a poem about autumn|"
    "purple elephant quietly seventeen|banana telescope under the rain|the meeting starts at noon|"
    "how far is the moon|dance in the kitchen|book a table for two|ok|stop|hello robot"
)
MAX_SIMILARITY = 0.7
DEFAULT_POOL = 512


def generate_phrases(n: int, seed: int) -> list[str]:
    """`n` distinct phrases (fewer if the vocabulary runs out): mostly verb + object (+ place), some of
    them two actions joined, plus the OTHER list; deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    phrases: dict[str, None] = dict.fromkeys(OTHER[: max(0, n)])
    attempts = 0
    while len(phrases) < n and attempts < 50 * n:
        attempts += 1
        phrase = f"{rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(PLACES)}"
        if rng.random() < 0.2:
            phrase += f" and {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
        phrase = phrase[0].upper() + phrase[1:] + ("." if rng.random() < 0.5 else "")
        phrases.setdefault(phrase)
    return list(phrases)[:n]


def distractor_pool(
    encoder: TextEncoder,
    expected: dict[str, str],
    instructions: Sequence[str],
    n: int = DEFAULT_POOL,
    seed: int = 0,
    max_similarity: float = MAX_SIMILARITY,
) -> tuple[list[str], np.ndarray]:
    """Generated phrases and their embeddings (n, D) from `encoder`, which must be the encoder the
    dataset's instructions were embedded with (`expected` = {"id", "version"}); phrases within
    `max_similarity` (cosine) of any of `instructions` are left out."""
    check_encoder(encoder, expected["id"], expected["version"])
    phrases = generate_phrases(n, seed)
    if not phrases:
        return [], np.zeros((0, encoder.dim), np.float32)
    # The model gets the encoder's output as is, like the stored instructions; cosine only decides the filter.
    embedded = np.asarray(encoder.encode(phrases), dtype=np.float32)
    tasks = _normalise(encoder.encode(list(instructions))) if instructions else np.zeros((0, encoder.dim))
    similarity = (_normalise(embedded) @ tasks.T).max(axis=1) if len(tasks) else np.zeros(len(phrases))
    keep = similarity < max_similarity
    return [p for p, k in zip(phrases, keep, strict=True) if k], embedded[keep]


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.cache
def _text_encoder(encoder_id: str) -> TextEncoder:
    return load_text_encoder(encoder_id)


@functools.lru_cache(maxsize=8)
def training_distractors(
    encoder_id: str, version: str, instructions: tuple[str, ...], n: int = DEFAULT_POOL, seed: int = 0
) -> np.ndarray:
    """The embeddings of `distractor_pool` for a training run, with the encoder loaded by id (once per
    process: loading MiniLM takes seconds, and tests train many small models)."""
    _, embedded = distractor_pool(
        _text_encoder(encoder_id), {"id": encoder_id, "version": version}, instructions, n, seed
    )
    embedded.flags.writeable = False  # shared between callers through the cache
    return embedded
