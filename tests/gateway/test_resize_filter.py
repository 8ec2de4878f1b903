"""One resize filter everywhere: the client and the gateway's upload reader fit a video's frames to the model's image
size identically (libswscale, AREA: sarm.data.video.RESIZE_INTERPOLATION, which dataset labelling uses too), so the
same mp4 scores the same whoever decodes it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from sarm_client.video import decode
from sarm_gateway.http.video import VideoLimits, VideoReader
from tests.client_harness import write_video


def test_client_gateway_and_datasets_resize_a_video_identically(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (6, 96, 128, 3), dtype=np.uint8)
    video = write_video(tmp_path / "camera.mp4", frames, fps=5)
    height, width = 48, 64
    by_client = decode(video, SimpleNamespace(num_cameras=1, image_size=(height, width), image_resize="exact"))  # type: ignore[arg-type]
    reader = VideoReader(video, height, width, VideoLimits(60, 100, 10**7))
    try:
        by_gateway = reader.read(100)
    finally:
        reader.close()
    np.testing.assert_array_equal(by_client, by_gateway)
    assert by_client.shape == (6, height, width, 3)
