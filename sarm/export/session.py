"""ONNX Runtime session options for the exported SARM graphs on CPU (why: bench/heads_profile.py).

Measured on our 2-core machines shared with other work: with onnxruntime's default, idle intra-op threads spin
waiting for the next parallel section; when the cores are busy (the gateway's event loop, video decoding, other
processes) the spinning threads steal the time the working thread needs. Turning spinning off made the heads
1.6-3x faster at batch 1-64 under load (bench/results/heads_profile.json). Graph optimisation stays at
ORT_ENABLE_ALL (EXTENDED measured no faster). What made the heads faster than PyTorch at batch 8-64 is the graph
itself, not an option: sarm/export/onnx_heads.py exports the transformer layers as Gemms on token rows, out of
reach of the slow SkipLayerNormalization fusion, so Triton's sessions get it too.
"""

from __future__ import annotations

import onnxruntime as ort


def cpu_session_options(threads: int = 1, *, spinning: bool = False) -> ort.SessionOptions:
    """Options for the heads and frame-encoder graphs: explicit threads, no busy-waiting, every optimisation.

    `threads` 0 lets onnxruntime pick one per physical core. Pass `spinning=True` only on cores the process has
    to itself, where spinning shaves microseconds off each parallel section."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    return options
