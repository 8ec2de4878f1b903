"""The generated distractor pool of the wrong-instruction augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from sarm.encoders.base import EncoderMismatchError, TextEncoder
from sarm.sim.stages import TASK_INSTRUCTIONS
from sarm.training.negatives import MAX_SIMILARITY, distractor_pool, generate_phrases


class WordEncoder(TextEncoder):
    """Bag of words over a fixed vocabulary, L2-normalised: shared words mean similar instructions."""

    encoder_id = "words"
    version = "1"
    dim = 64

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().strip(".").split():
                out[row, hash(word) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def test_phrases_are_distinct_deterministic_and_seeded() -> None:
    a, b, c = generate_phrases(300, 0), generate_phrases(300, 0), generate_phrases(300, 1)
    assert len(a) == len(set(a)) == 300 and a == b and a != c
    assert len(generate_phrases(5, 0)) == 5 and generate_phrases(0, 0) == []


def test_pool_drops_phrases_close_to_a_trained_instruction() -> None:
    encoder = WordEncoder()
    phrases, embedded = distractor_pool(encoder, {"id": "words", "version": "1"}, [], 200, 0)
    assert embedded.shape == (200, 64) and len(phrases) == 200
    # An "instruction" equal to a generated phrase removes it (cosine 1) and anything sharing most words.
    kept, kept_embedded = distractor_pool(encoder, {"id": "words", "version": "1"}, [phrases[20]], 200, 0)
    assert phrases[20] not in kept and len(kept) == len(kept_embedded) < 200
    similarity = kept_embedded @ encoder.encode([phrases[20]])[0]
    assert np.all(similarity < MAX_SIMILARITY)


def test_pool_refuses_another_encoder_than_the_datasets() -> None:
    with pytest.raises(EncoderMismatchError, match="words@1"):
        distractor_pool(WordEncoder(), {"id": "words", "version": "2"}, [], 10, 0)


def test_real_pool_stays_away_from_meta_world_tasks(text_encoder: TextEncoder) -> None:
    expected = {"id": text_encoder.encoder_id, "version": text_encoder.version}
    instructions = list(TASK_INSTRUCTIONS.values())
    phrases, embedded = distractor_pool(text_encoder, expected, instructions, 256, 0)
    assert len(phrases) > 200 and embedded.shape == (len(phrases), text_encoder.dim)
    tasks = text_encoder.encode(instructions)
    assert float((embedded @ tasks.T).max()) < MAX_SIMILARITY
