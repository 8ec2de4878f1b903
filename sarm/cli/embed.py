"""`sarm embed`: encode every frame of a dataset once, beside the dataset.

Frames run through the exported encoder graph in ONNX Runtime (3-5x faster than PyTorch eager on CPU, same
numbers within the export parity tolerance); `--engine torch` keeps the PyTorch encoder. `--quantize int8` uses the
INT8 encoder, calibrated on frames of the dataset being embedded, or the one of `--encoder-repo`, a repository
from `sarm export --quantize int8` (then the embeddings are exactly what that served model computes). The store
records INT8 in its manifest, and a float checkpoint refuses such embeddings.

`--device` (sarm.device): with ONNX Runtime, cuda runs the frame encoder on onnxruntime-gpu's CUDAExecutionProvider;
with `--engine torch`, both encoders run on the torch device. The instruction encoder (a few sentences) stays on the
CPU with ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from sarm.cli.progress import progress_bar
from sarm.data.lerobot import DatasetError, LeRobotDataset
from sarm.data.validate import InvalidDatasetError, require_valid
from sarm.device import DEVICE_HELP, DeviceName, onnx_providers, resolve_device
from sarm.encoders.base import EncoderMismatchError, FrameEncoder, check_encoder
from sarm.encoders.registry import DEFAULT_FRAME_ENCODER, DEFAULT_TEXT_ENCODER, load_frame_encoder, load_text_encoder
from sarm.encoders.weights import local_weights

if TYPE_CHECKING:
    from sarm.export.onnx_encoder import OnnxFrameEncoder

console = Console()
ENGINES = ("onnxruntime", "torch")


def embed(
    dataset: Annotated[Path, typer.Argument(help="Dataset root (LeRobot v3.0, annotated).")],
    frame_encoder: Annotated[str, typer.Option(help="Frame encoder name.")] = DEFAULT_FRAME_ENCODER,
    text_encoder: Annotated[str, typer.Option(help="Instruction encoder name.")] = DEFAULT_TEXT_ENCODER,
    model_path: Annotated[
        Path | None, typer.Option(help="Local weights directory (CLIP: a saved transformers CLIPModel).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per encoder batch.")] = 8,
    engine: Annotated[str, typer.Option(help="onnxruntime (exported graph) or torch (PyTorch eager).")] = ENGINES[0],
    quantize: Annotated[
        str | None, typer.Option(help="int8: the INT8 encoder (calibrated on this dataset unless --encoder-repo).")
    ] = None,
    encoder_repo: Annotated[
        Path | None, typer.Option(help="Use the frame encoder graph of this `sarm export` repository.")
    ] = None,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime intra-op threads (0: one per core).")] = 0,
    cache_dir: Annotated[Path | None, typer.Option(help="Where exported encoder graphs are cached.")] = None,
    device: Annotated[DeviceName, typer.Option(help=f"Where the encoders run. {DEVICE_HELP}")] = "auto",
) -> None:
    """Encode every frame once and store the embeddings beside the dataset (resumable)."""
    from sarm.embeddings import embed_dataset

    if engine not in ENGINES or quantize not in (None, "int8"):
        console.print(f"[red]error:[/red] --engine must be one of {ENGINES} and --quantize int8 or absent")
        raise typer.Exit(2)
    if engine == "torch" and (quantize or encoder_repo):
        console.print("[red]error:[/red] --quantize and --encoder-repo run ONNX Runtime: drop --engine torch")
        raise typer.Exit(2)
    try:
        # First, so that a missing GPU is the one line it is before any loading.
        torch_device = resolve_device(device) if engine == "torch" else resolve_device("cpu")
        providers = onnx_providers(device) if engine == "onnxruntime" else []
        ds = require_valid(dataset)
        # Encoders loaded from a folder (CLIP) take --model-path, else SARM_ENCODER_PATH; the defaults ship theirs.
        weights = str(model_path) if model_path else None
        frames = load_frame_encoder(frame_encoder, **local_weights(frame_encoder, weights))
        texts = load_text_encoder(text_encoder, device=torch_device, **local_weights(text_encoder, weights))
        encoder: FrameEncoder | OnnxFrameEncoder = (
            frames.to(torch_device)
            if engine == "torch"
            else _onnx_encoder(frames, ds, quantize, encoder_repo, threads, cache_dir, providers)
        )
        with progress_bar() as bar:
            job = bar.add_task("embedding", total=len(ds.episodes), status="")
            encoded = 0

            def advance(episode: int, count: int) -> None:
                nonlocal encoded
                encoded += count
                bar.update(job, advance=1, status=f"{encoded} frames encoded")

            store = embed_dataset(ds, encoder, texts, batch_size=batch_size, on_episode=advance)
    except (InvalidDatasetError, DatasetError, EncoderMismatchError, ValueError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from error
    kind = "INT8" if quantize else "float"
    where = str(torch_device) if engine == "torch" else providers[0]
    console.print(
        f"embeddings in {store} ({encoded} frames encoded now with the {kind} {engine} encoder on {where}, the rest "
        "were already stored)",
        soft_wrap=True,
    )


def _onnx_encoder(
    torch_encoder: FrameEncoder,
    ds: LeRobotDataset,
    quantize: str | None,
    repo: Path | None,
    threads: int,
    cache: Path | None,
    providers: list[str],
) -> OnnxFrameEncoder:
    """The OnnxFrameEncoder for these options (the torch encoder gives the identity and the graph to export)."""
    from sarm.export.onnx_encoder import (
        DEFAULT_CACHE,
        OnnxFrameEncoder,
        float_graphs,
        int8_graphs,
        int8_identity,
        repo_graph,
    )

    ident = (torch_encoder.encoder_id, torch_encoder.version, torch_encoder.dim)
    if repo is not None:
        graphs, identity = repo_graph(repo)
        check_encoder(torch_encoder, identity["id"], identity["version"])
        if (quantize == "int8") != ("quantization" in identity):
            fix = (
                "pass --quantize int8 to use it"
                if "quantization" in identity
                else "drop --quantize int8, or "
                "export an INT8 repository with `sarm export --quantize int8 --calibration DATASET`"
            )
            kind = "an INT8" if "quantization" in identity else "a float"
            raise ValueError(f"{repo} holds {kind} frame encoder: {fix}")
        return OnnxFrameEncoder(*ident, graphs, identity.get("quantization"), threads, providers, torch_encoder.prepare)
    cache = cache or DEFAULT_CACHE
    if quantize == "int8":
        graphs, quantization = int8_graphs(torch_encoder, ds, cache), int8_identity("embedded dataset")
        return OnnxFrameEncoder(*ident, graphs, quantization, threads, providers, torch_encoder.prepare)
    graphs = float_graphs(torch_encoder, cache)
    return OnnxFrameEncoder(*ident, graphs, None, threads, providers, torch_encoder.prepare)
