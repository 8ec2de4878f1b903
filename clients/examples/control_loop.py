"""A control loop that gets a reward for every camera frame from the SARM gateway over one episode stream.

It checks every answer and exits non-zero when one is wrong, so it doubles as a smoke test of a deployment.
Synthetic frames stand in for the camera; needs only sarm-client.

    python clients/examples/control_loop.py --target localhost:50051 --instruction "pick up the cube" [--steps 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from sarm_client import SarmClient, SarmError, Timeout


def run(target: str, instruction: str, steps: int, fps: float, token: str | None) -> list[str]:
    """The loop; returns what went wrong (nothing when all is well)."""
    problems = []
    with SarmClient(target, token=token, timeout=Timeout(call=10.0, step=2.0)) as client:
        info = client.info()
        height, width = info.image_size
        camera = np.random.default_rng(0)
        with client.stream(instruction, fps=fps, episode_id="control-loop-example") as episode:
            for t in range(steps):
                frames = camera.integers(0, 256, size=(info.num_cameras, height, width, 3), dtype=np.uint8)
                started = time.perf_counter()
                scores = episode.step(frames)  # one image per camera
                took_ms = (time.perf_counter() - started) * 1000
                if [s.frame_index for s in scores] != [t]:
                    problems.append(f"step {t}: scores for frames {[s.frame_index for s in scores]}")
                    continue
                score = scores[0].score
                if not 0 <= score.progress <= 1 or score.stage_name not in info.stage_names:
                    problems.append(f"step {t}: progress {score.progress}, stage {score.stage_name!r}")
                print(f"{t:4d}  {score.stage_name:<16} progress {score.progress:.3f}  {took_ms:6.1f} ms")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="localhost:50051")
    parser.add_argument("--instruction", default="pick up the cube")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--fps", type=float, default=10.0)
    args = parser.parse_args()
    try:
        problems = run(args.target, args.instruction, args.steps, args.fps, os.environ.get("SARM_TOKEN"))
    except SarmError as error:
        problems = [f"{type(error).__name__}: {error}"]
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
