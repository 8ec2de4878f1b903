"""CLIP features as LeRobot's SARM processor computes them, against transformers' CLIPModel + CLIPProcessor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from sarm.lerobot.clip import LeRobotCLIP, clip_pixels
from sarm.scoring.images import resize_shape

CLIP_FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "lerobot_sarm_insertion" / "clip"


@pytest.fixture(scope="module")
def clip_dir() -> Path:
    if not CLIP_FIXTURE.is_dir():
        pytest.skip(f"the shared CLIP fixture is not at {CLIP_FIXTURE}")
    return CLIP_FIXTURE


@pytest.fixture(scope="module")
def reference(clip_dir: Path) -> tuple[CLIPModel, CLIPProcessor]:
    return CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)


def _features(output: object) -> np.ndarray:
    # transformers 5 returns a BaseModelOutputWithPooling whose pooler_output holds the projected features.
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]
    return tensor.detach().numpy()


def test_the_processor_under_test_is_the_pil_one(reference: tuple[CLIPModel, CLIPProcessor]) -> None:
    # LeRobot's run used the PIL-based processor (the fixture README); so must this comparison.
    assert type(reference[1].image_processor).__name__ in ("CLIPImageProcessor", "CLIPImageProcessorPil")
    assert "Fast" not in type(reference[1].image_processor).__name__


def test_lerobots_float_round_trip_keeps_every_byte() -> None:
    # LeRobot decodes to float32 / 255 and its processor casts (x * 255) back to uint8 by truncation.
    values = torch.arange(256, dtype=torch.uint8).to(torch.float32) / 255
    assert np.array_equal((values.numpy() * 255).astype(np.uint8), np.arange(256, dtype=np.uint8))


@pytest.mark.parametrize("shape", [(128, 128), (480, 640), (97, 301), (300, 200), (224, 224)])
def test_pixels_equal_clipprocessor(reference: tuple[CLIPModel, CLIPProcessor], shape: tuple[int, int]) -> None:
    images = np.random.default_rng(sum(shape)).integers(0, 256, (2, *shape, 3), dtype=np.uint8)
    expected = reference[1](images=[Image.fromarray(i) for i in images], return_tensors="pt")["pixel_values"]
    np.testing.assert_array_equal(clip_pixels(images), expected.numpy())


def test_resize_shape_truncates_the_long_side() -> None:
    assert resize_shape(480, 640) == (224, 298)  # 224 * 640 / 480 = 298.67
    assert resize_shape(301, 97) == (695, 224)
    assert resize_shape(128, 128) == (224, 224)


def test_features_equal_clipmodel(reference: tuple[CLIPModel, CLIPProcessor], clip_dir: Path) -> None:
    model, processor = reference
    ours = LeRobotCLIP(clip_dir)
    images = np.random.default_rng(0).integers(0, 256, (5, 128, 128, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = _features(
            model.get_image_features(**processor(images=[Image.fromarray(i) for i in images], return_tensors="pt"))
        )
    got = ours.encode_frames(images, batch_size=2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert np.linalg.norm(got, axis=1).min() > 2  # projected, not L2-normalised, as LeRobot feeds SARM
    texts = ["insert the peg into the socket", "hold", "Pick up the RED cube, then place it!"]
    for text in texts:
        tokens = processor.tokenizer([text], return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            want = _features(model.get_text_features(**tokens))
        np.testing.assert_allclose(ours.encode_texts([text]), want, rtol=0, atol=1e-5)


def test_a_clip_of_another_input_size_is_refused(tmp_path: Path, clip_dir: Path) -> None:
    import json
    import shutil

    copy = tmp_path / "clip"
    shutil.copytree(clip_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["vision_config"]["image_size"] = 256
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="input size 256"):
        LeRobotCLIP(copy)


@pytest.mark.parametrize(
    ("field", "value"),
    [("resample", 2), ("size", {"shortest_edge": 256}), ("do_center_crop", False), ("image_mean", [0.5, 0.5, 0.5])],
)
def test_a_clip_with_other_processor_settings_is_refused(
    tmp_path: Path, clip_dir: Path, field: str, value: object
) -> None:
    import json
    import shutil

    copy = tmp_path / "clip"
    shutil.copytree(clip_dir, copy)
    config = json.loads((copy / "processor_config.json").read_text())
    config["image_processor"][field] = value
    (copy / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=repr(field)):
        LeRobotCLIP(copy)
