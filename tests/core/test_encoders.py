"""Frozen encoders: ids and versions, shapes, freezing, ONNX parity, offline loading."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers

from sarm.encoders import (
    EncoderMismatchError,
    FrameEncoder,
    TextEncoder,
    check_encoder,
    export_frame_encoder,
    fingerprint,
    load_frame_encoder,
    load_text_encoder,
)
from sarm.encoders.onnx_export import INPUT_NAME
from tests.conftest import save_tiny_clip

DIGEST = r"[0-9a-f]{12}"


def _refuse_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("an encoder tried to reach the network")


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """Any socket connection while loading fails the test: weights must come from disk only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse_network)
        mp.setattr(socket, "create_connection", _refuse_network)
        yield


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _assert_frozen(module: torch.nn.Module) -> None:
    assert not any(p.requires_grad for p in module.parameters())
    assert not any(m.training for m in module.modules())


@pytest.fixture(scope="module")
def effnet(offline: None) -> FrameEncoder:
    return load_frame_encoder("efficientnet-lite0")


@pytest.fixture(scope="module")
def minilm(offline: None) -> TextEncoder:
    return load_text_encoder("minilm-l6")


def test_efficientnet_identity_and_frozen(effnet: FrameEncoder) -> None:
    assert (effnet.encoder_id, effnet.dim, effnet.input_size) == ("efficientnet-lite0", 1280, 224)
    assert re.fullmatch(rf"0\.1\.0\+{DIGEST}\.224squash", effnet.version)
    assert fingerprint(effnet) == f"efficientnet-lite0@{effnet.version}"
    _assert_frozen(effnet)
    effnet.train()  # e.g. a parent module switching to training
    _assert_frozen(effnet)


def test_efficientnet_encode_frames(effnet: FrameEncoder) -> None:
    frames = _frames(5, 64, 80)
    out = effnet.encode_frames(frames, batch_size=2)
    assert out.shape == (5, 1280) and out.dtype == np.float32
    assert np.isfinite(out).all() and (out >= 0).all()  # pooled ReLU6 features
    np.testing.assert_array_equal(out, effnet.encode_frames(frames, batch_size=2))
    np.testing.assert_allclose(out, effnet.encode_frames(frames, batch_size=5), atol=1e-5)
    assert not np.allclose(out[0], out[1])


def test_frame_encoder_rejects_non_uint8_rgb(effnet: FrameEncoder) -> None:
    with pytest.raises(ValueError, match="uint8"):
        effnet.encode_frames(_frames(1, 32, 32).astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        effnet(torch.zeros((1, 32, 32, 4), dtype=torch.uint8))


def test_version_records_preprocessing_and_mismatch_is_refused(effnet: FrameEncoder) -> None:
    small = load_frame_encoder("efficientnet-lite0", input_size=160)
    assert small.version.split(".")[:-1] == effnet.version.split(".")[:-1]  # same weights
    assert small.version != effnet.version
    check_encoder(effnet, "efficientnet-lite0", effnet.version)
    with pytest.raises(EncoderMismatchError):
        check_encoder(small, "efficientnet-lite0", effnet.version)


def test_unknown_encoder_names_are_refused() -> None:
    with pytest.raises(ValueError, match="known"):
        load_frame_encoder("resnet-50")
    with pytest.raises(ValueError, match="known"):
        load_text_encoder("efficientnet-lite0")


@pytest.mark.parametrize(
    ("input_size", "height", "width"),
    [(224, 64, 64), (32, 72, 100)],  # upsampling; box filter (2x3) then bilinear
)
def test_onnx_export_matches_torch(
    effnet: FrameEncoder, tmp_path: Path, input_size: int, height: int, width: int
) -> None:
    encoder = effnet if input_size == 224 else load_frame_encoder("efficientnet-lite0", input_size=input_size)
    path = export_frame_encoder(encoder, tmp_path / "encoder.onnx", height=height, width=width)
    assert not list(tmp_path.glob("*.data"))  # weights inline
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (input_meta,) = session.get_inputs()
    assert isinstance(input_meta.shape[0], str) and input_meta.shape[1:] == [height, width, 3]
    for batch in (1, 3):
        frames = _frames(batch, height, width, seed=batch)
        (got,) = session.run(None, {INPUT_NAME: frames})
        expected = encoder.encode_frames(frames)
        assert got.shape == (batch, 1280)
        # Measured ≤ 6e-5 on embeddings of magnitude ~5: ORT's Resize and convolutions round
        # differently from torch's.
        assert np.abs(got - expected).max() < 2e-4


def test_minilm_text_encoder(minilm: TextEncoder) -> None:
    assert (minilm.encoder_id, minilm.dim) == ("minilm-l6", 384)
    assert re.fullmatch(rf"0\.1\.0\+{DIGEST}", minilm.version)
    texts = ["pick up the cup", "grasp the mug", "the weather is sunny today"]
    out = minilm.encode(texts)
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out, minilm.encode(texts))
    assert out[0] @ out[1] > out[0] @ out[2] + 0.2  # real weights: paraphrases are closer
    assert minilm.encode([]).shape == (0, 384)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-clip")
    save_tiny_clip(path)
    return path


def test_clip_frame_encoder_from_local_dir(tiny_clip_dir: Path, offline: None) -> None:
    encoder = load_frame_encoder("clip-vit-b32", model_path=str(tiny_clip_dir))
    assert (encoder.encoder_id, encoder.dim, encoder.input_size) == ("clip-vit-b32", 16, 32)
    assert re.fullmatch(rf"{re.escape(transformers.__version__)}\+{DIGEST}\.32processor", encoder.version)
    _assert_frozen(encoder)
    frames = _frames(3, 40, 50)
    out = encoder.encode_frames(frames)
    assert out.shape == (3, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # The same image gives the same embedding, alone or among others.
    np.testing.assert_allclose(encoder.encode_frames(frames[1:2]), out[1:2], atol=1e-6)
    np.testing.assert_array_equal(encoder.encode_frames(frames), out)


def test_clip_center_crop_equals_cropping_first(tiny_clip_dir: Path, offline: None) -> None:
    encoder = load_frame_encoder("clip-vit-b32", model_path=str(tiny_clip_dir), center_crop=True)
    assert encoder.version.endswith(".32crop")
    frames = _frames(2, 40, 60)
    np.testing.assert_allclose(
        encoder.encode_frames(frames), encoder.encode_frames(frames[:, :, 10:50].copy()), atol=1e-6
    )


def test_clip_text_encoder_from_local_dir(tiny_clip_dir: Path, offline: None) -> None:
    encoder = load_text_encoder("clip-vit-b32", model_path=str(tiny_clip_dir))
    assert (encoder.encoder_id, encoder.dim) == ("clip-vit-b32", 16)
    assert re.fullmatch(rf"{re.escape(transformers.__version__)}\+{DIGEST}", encoder.version)
    texts = ["pick up the cup", "open the drawer"]
    out = encoder.encode(texts)
    assert out.shape == (2, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out, encoder.encode(texts))
    assert not np.allclose(out[0], out[1])
    assert encoder.encode([]).shape == (0, 16)


SHARED_CLIP = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "lerobot_sarm_insertion" / "clip"


@pytest.mark.skipif(not SHARED_CLIP.is_dir(), reason=f"the shared CLIP fixture {SHARED_CLIP} is missing")
def test_clip_encoders_equal_clipmodel_with_clipprocessor(offline: None, tmp_path: Path) -> None:
    """Our CLIP frame encoder (eager, and its exported graph after the host crop) and text encoder give what
    transformers' CLIPModel gives for CLIPProcessor's inputs, L2-normalised, on frames of several sizes."""
    encoder = load_frame_encoder("clip-vit-b32", model_path=str(SHARED_CLIP))
    texts = load_text_encoder("clip-vit-b32", model_path=str(SHARED_CLIP))
    assert encoder.image_resize == "clip" and encoder.version.endswith(".224processor")
    processor = transformers.CLIPProcessor.from_pretrained(str(SHARED_CLIP))
    model = transformers.CLIPModel.from_pretrained(str(SHARED_CLIP)).eval()
    graph = export_frame_encoder(encoder, tmp_path / "clip.onnx", height=224, width=224)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    for height, width in ((120, 160), (300, 200), (224, 224)):
        frames = _frames(3, height, width)
        with torch.no_grad():
            pixels = processor(images=list(frames), return_tensors="pt")["pixel_values"]
            want = _unit(_features(model.get_image_features(pixel_values=pixels)))
        np.testing.assert_allclose(encoder.encode_frames(frames), want, atol=1e-5)
        np.testing.assert_allclose(session.run(None, {INPUT_NAME: encoder.prepare(frames)})[0], want, atol=1e-5)
    instructions = ["insert the peg into the socket", "pick up the cube"]
    with torch.no_grad():
        tokens = processor(text=instructions, return_tensors="pt", padding=True)
        want = _unit(_features(model.get_text_features(**tokens)))
    np.testing.assert_allclose(texts.encode(instructions), want, atol=1e-5)


def _features(output: object) -> np.ndarray:
    """CLIPModel.get_*_features: a tensor, or (newer transformers) an output whose pooler_output is the projection."""
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]
    return tensor.numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
