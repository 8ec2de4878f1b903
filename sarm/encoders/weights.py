"""Where encoders whose weights are not shipped in a wheel (CLIP) find them: a local `save_pretrained` folder, or a
Hub id already in the local Hugging Face cache. Nothing is ever downloaded, and a missing folder is one line that
says how to point at it (SARM_ENCODER_PATH, or a command's --encoder-path), never a transformers traceback."""

from __future__ import annotations

import os
from pathlib import Path

ENCODER_PATH_ENV = "SARM_ENCODER_PATH"
# Encoders without weights in a wheel (the defaults, EfficientNet-Lite0 and MiniLM, ship theirs), and the Hub id
# each is looked up by in the local cache when nothing else is said.
LOCAL_WEIGHT_ENCODERS = {"clip-vit-b32": "openai/clip-vit-base-patch32"}


class EncoderWeightsMissing(ValueError):
    """The encoder's weights are not where we were told, nor in the local cache; the message says what to do."""


def resolve_local(where: str) -> Path:
    """A local folder holding config.json, or a Hub id (owner/name) resolved from the local Hugging Face cache."""
    path = Path(where).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EncoderWeightsMissing(f"{where}: the folder holds no config.json (expected a save_pretrained folder)")
        return path.resolve()
    if path.exists() or where.count("/") != 1:
        raise EncoderWeightsMissing(f"{where}: neither a folder nor a Hub id such as openai/clip-vit-base-patch32")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(where, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as error:
        raise EncoderWeightsMissing(
            f"{where}: not in the local Hugging Face cache (nothing is downloaded); pass a folder saved with "
            "save_pretrained"
        ) from error


def local_weights(encoder_id: str, recorded: str | None = None) -> dict[str, str]:
    """The constructor arguments that point encoder `encoder_id` at its weights: SARM_ENCODER_PATH, else the folder
    the model recorded, else its Hub id in the local cache; {} for encoders that ship their own."""
    if encoder_id not in LOCAL_WEIGHT_ENCODERS:
        return {}
    where = os.environ.get(ENCODER_PATH_ENV) or recorded or LOCAL_WEIGHT_ENCODERS[encoder_id]
    try:
        return {"model_path": str(resolve_local(where))}
    except EncoderWeightsMissing as error:
        raise EncoderWeightsMissing(
            f"the {encoder_id} encoder's weights: {error} (set {ENCODER_PATH_ENV} or --encoder-path)"
        ) from error


ENCODER_PATH_HELP = (
    f"Local weights of an encoder the model needs that ships none (CLIP: a save_pretrained folder or a Hub id in the "
    f"local cache); default: {ENCODER_PATH_ENV}, else the folder the model records. Nothing is downloaded."
)


def use_encoder_path(path: Path | None) -> None:
    """A command's --encoder-path: where this process (and the workers it starts) find encoder weights."""
    if path is not None:
        os.environ[ENCODER_PATH_ENV] = str(path)
