"""Score one window of frames through Triton directly, check the answer, exit non-zero if it is wrong.

Needs only numpy and tritonclient (no torch): the frames go through the `sarm_frame_encoder` model, the
window of their embeddings through `sarm_heads`. The instruction embedding is read from --text-embedding
(a .npy of the manifest's text-encoder width) or is a unit vector, which is enough for a smoke test.

    python clients/examples/triton_score_window.py --url 127.0.0.1:8001 --repo model_repo/default
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype


def infer(
    client: grpcclient.InferenceServerClient, model: str, inputs: dict[str, np.ndarray], outputs: list[str]
) -> dict[str, np.ndarray]:
    requests = []
    for name, value in inputs.items():
        tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        requests.append(tensor)
    result = client.infer(
        model, requests, outputs=[grpcclient.InferRequestedOutput(o) for o in outputs], client_timeout=30
    )
    return {name: result.as_numpy(name) for name in outputs}


def score_window(url: str, manifest: dict, text: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Encode 9 synthetic frames, assemble the causal window (padded to the model's length), score it."""
    client = grpcclient.InferenceServerClient(url)
    height, width = manifest["image"]["height"], manifest["image"]["width"]
    window, length = manifest["window"]["frames"], manifest["window"]["sequence_length"]
    frames = np.random.default_rng(seed).integers(0, 256, size=(window, height, width, 3), dtype=np.uint8)
    embeddings = infer(client, manifest["models"]["encoder"], {"images": frames}, ["embeddings"])["embeddings"]
    # Positions past the window repeat its last frame; the model never attends to them (causal attention).
    padded = np.concatenate([embeddings, np.repeat(embeddings[-1:], length - window, axis=0)])
    heads_inputs = {
        "frames": padded[None, :, None, :].astype(np.float32),
        "text": text[None].astype(np.float32),
        "lengths": np.array([[window]], dtype=np.int64),
    }
    return infer(client, manifest["models"]["heads"], heads_inputs, ["stage_probs", "tau", "progress", "confidence"])


def check(scores: dict[str, np.ndarray], stages: int) -> list[str]:
    """What is wrong with the scores (empty when they are a valid SARM answer)."""
    probs, tau, progress, confidence = (scores[k] for k in ("stage_probs", "tau", "progress", "confidence"))
    problems = []
    if probs.shape != (1, stages) or not np.isclose(probs.sum(), 1.0, atol=1e-4):
        problems.append(f"stage probabilities {probs} do not form a distribution over {stages} stages")
    if not 0.0 <= float(tau[0, 0]) <= 1.0 or not 0.0 <= float(progress[0, 0]) <= 1.0:
        problems.append(f"tau {tau} or progress {progress} outside [0, 1]")
    if not np.isclose(confidence[0, 0], probs.max(), atol=1e-5):
        problems.append(f"confidence {confidence} is not the top stage probability {probs.max()}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC endpoint")
    parser.add_argument("--repo", type=Path, required=True, help="model repository (holds sarm_manifest.json)")
    parser.add_argument("--text-embedding", type=Path, help=".npy instruction embedding")
    args = parser.parse_args()
    manifest = json.loads((args.repo / "sarm_manifest.json").read_text())
    dim = manifest["text_encoder"]["dim"]
    text = np.load(args.text_embedding) if args.text_embedding else np.full(dim, dim**-0.5, dtype=np.float32)
    scores = score_window(args.url, manifest, text)
    problems = check(scores, len(manifest["stage_names"]))
    stage = manifest["stage_names"][int(scores["stage_probs"].argmax())]
    print(
        f"stage {stage} (confidence {scores['confidence'][0, 0]:.3f}), tau {scores['tau'][0, 0]:.3f}, "
        f"progress {scores['progress'][0, 0]:.3f}"
    )
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
