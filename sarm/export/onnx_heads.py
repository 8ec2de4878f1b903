"""Export the SARM heads to ONNX: window embeddings + instruction embedding + lengths → scores.

Inputs  (batch symbolic):  frames  (B, L, C, D_frame) float32   window embeddings, L = window + max rewind
                           text    (B, D_text)        float32   instruction embedding
                           lengths (B, 1)             int64     valid positions; the score is read at the last
                           state   (B, L, S)          float32   raw joint state (models with state_dim > 0 only;
                                                                z-scored inside by the checkpoint's statistics)
Outputs:                   stage_probs (B, K), tau (B, 1), progress (B, 1), confidence (B, 1)   float32

Per-window scalars are (B, 1), not (B,): Triton describes every tensor by its per-item dims, which cannot
be empty, so (B, 1) is what a Triton model of any backend (python, TensorRT) hands over as it is.

The transformer layers are exported as `RowsEncoderLayer`s, the same arithmetic laid out for ONNX Runtime
(bench/heads_profile.py, issue #13). nn.TransformerEncoderLayer exports as torch's multi-head attention
decomposed on 3-D (B, T, d) tokens: seq-first transposes around it, a 5-D transpose + split for q/k/v, every
Linear a MatMul plus a separate bias Add (and Relu), and each residual Add + LayerNorm fused by onnxruntime
into a SkipLayerNormalization, whose CPU kernel takes ~5x as long as Add + LayerNormalization (1.0 vs 0.2 ms
on (32, 39, 128)); at batch 32 these were a quarter of the run and put ONNX Runtime at 0.74-1.0x PyTorch.
On a (B·T, d) token matrix every Linear is a Gemm with its bias (the first FFN one fused with its Relu), q, k
and v come from three Gemms (the 1/√d_head scale folded into q's weights) with one transpose each, and no
SkipLayerNormalization fusion applies (it wants 3-D inputs). Tried and not taken: onnxruntime.transformers'
optimizer (no attention/LayerNorm pattern of this graph matches: 0 fusions), torch.onnx.export's optimize=True
(the default, already on), ORT_ENABLE_EXTENDED vs ALL (same), and F.scaled_dot_product_attention, which lowers
to the same MatMul/Softmax ops at opset 20 and to the ONNX Attention op at opset 23 (about 1.5x slower on CPU at
batch 32, and not in every Triton's onnxruntime).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from sarm.manifest import SARM_HEADS_INPUTS as INPUTS
from sarm.manifest import SARM_HEADS_OUTPUTS as OUTPUTS
from sarm.model.modeling_sarm import SARM

M = TypeVar("M", bound=nn.Module)


class RowsEncoderLayer(nn.Module):
    """An eval-mode, batch-first nn.TransformerEncoderLayer (either norm order, its own activation) computed on
    (B·T, d) token rows; shares the layer's weights except q/k/v, which are its packed in-projection split."""

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        super().__init__()
        attention = layer.self_attn
        self.self_attn = attention  # nn.TransformerEncoder.forward reads layers[0].self_attn.batch_first
        d, self.heads = attention.embed_dim, attention.num_heads
        scale = 1 / math.sqrt(d // self.heads)
        weight, bias = attention.in_proj_weight.detach(), attention.in_proj_bias.detach()
        self.q, self.k, self.v = (nn.Linear(d, d) for _ in range(3))
        with torch.no_grad():
            for i, (projection, factor) in enumerate(((self.q, scale), (self.k, 1.0), (self.v, 1.0))):
                projection.weight.copy_(weight[i * d : (i + 1) * d] * factor)
                projection.bias.copy_(bias[i * d : (i + 1) * d] * factor)
        self.out, self.norm1, self.norm2 = attention.out_proj, layer.norm1, layer.norm2
        self.linear1, self.linear2, self.activation = layer.linear1, layer.linear2, layer.activation
        self.norm_first = layer.norm_first
        self.train(False)

    @staticmethod
    def supports(layer: nn.Module) -> bool:
        """What this rewrite reproduces exactly; any other layer is exported as it is."""
        if not isinstance(layer, nn.TransformerEncoderLayer):
            return False
        attention = layer.self_attn
        return (
            attention.batch_first
            and attention._qkv_same_embed_dim
            and attention.in_proj_bias is not None
            and attention.bias_k is None
            and not attention.add_zero_attn
            and not layer.training
        )

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        if src_key_padding_mask is not None or (is_causal and src_mask is None):
            raise ValueError("RowsEncoderLayer takes an explicit attention mask and no key padding mask")
        batch, length, d = src.shape
        x = src.reshape(batch * length, d)
        if self.norm_first:
            x = x + self._attention(self.norm1(x), src_mask, batch, length)
            return (x + self._feed_forward(self.norm2(x))).reshape(batch, length, d)
        x = self.norm1(x + self._attention(x, src_mask, batch, length))
        return self.norm2(x + self._feed_forward(x)).reshape(batch, length, d)

    def _attention(self, x: Tensor, mask: Tensor | None, batch: int, length: int) -> Tensor:
        heads, d = self.heads, x.shape[-1]
        q = self.q(x).reshape(batch, length, heads, d // heads).transpose(1, 2)  # (B, H, T, dh)
        k_t = self.k(x).reshape(batch, length, heads, d // heads).permute(0, 2, 3, 1)  # (B, H, dh, T)
        v = self.v(x).reshape(batch, length, heads, d // heads).transpose(1, 2)
        scores = q @ k_t
        if mask is not None:  # nn.TransformerEncoder hands a boolean mask over as a float one (-inf = blocked)
            scores = scores + (mask if mask.is_floating_point() else mask.to(x.dtype).masked_fill(mask, -math.inf))
        attended = torch.softmax(scores, dim=-1) @ v  # (B, H, T, dh)
        return self.out(attended.transpose(1, 2).reshape(batch * length, d))

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.activation(self.linear1(x)))


def rows_layout(model: SARM) -> SARM:
    """A copy of `model` whose transformer layers are RowsEncoderLayers; parameters are shared, not copied."""
    out = _shallow(model)
    for name in ("stage_net", "subtask_net"):
        net = _shallow(getattr(model, name))
        encoder = _shallow(net.encoder)
        encoder.layers = nn.ModuleList(
            RowsEncoderLayer(layer) if RowsEncoderLayer.supports(layer) else layer for layer in net.encoder.layers
        )
        net.encoder = encoder
        setattr(out, name, net)
    return out


def _shallow(module: M) -> M:
    """copy.copy with its own child table, so replacing a child leaves the original module untouched."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


class HeadsGraph(nn.Module):
    """SARM.predict as a plain tuple-returning module (what torch.onnx.export traces)."""

    def __init__(self, model: SARM) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(
        self, frames: Tensor, text: Tensor, lengths: Tensor, state: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        p = self.model.predict(frames, text, lengths[:, 0], state)
        return p.stage_probs, p.tau[:, None], p.progress[:, None], p.confidence[:, None]


def export_heads(model: SARM, path: Path, *, rows: bool = True) -> Path:
    """A single self-contained .onnx with a symbolic batch (exported from a batch of 2: a batch of 1 would
    be specialised to a constant). `rows=False` exports torch's own layer layout (the slower graph, kept for
    bench/heads_profile.py's before/after)."""
    config = model.config
    frames = torch.zeros(2, config.sequence_length, config.num_cameras, config.frame_dim)
    text = torch.zeros(2, config.text_dim)
    lengths = torch.full((2, 1), config.window_frames, dtype=torch.int64)
    inputs: tuple[Tensor, ...] = (frames, text, lengths)
    if config.state_dim:
        inputs += (torch.zeros(2, config.sequence_length, config.state_dim),)
    batch = torch.export.Dim("batch")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        # the wrapper in eval mode too: torch warns about any module left in training mode
        HeadsGraph(rows_layout(model.eval()) if rows else model).eval(),
        inputs,
        str(path),
        input_names=[*INPUTS, *(["state"] if config.state_dim else [])],
        output_names=list(OUTPUTS),
        dynamic_shapes=tuple({0: batch} for _ in inputs),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return path
