"""`sarm_progress.parquet`: per-frame progress in the schema LeRobot, Robometer and TOPReward write, which RA-BC
trainers read: index, episode_index, frame_index, progress_sparse. Provenance (which model, which window, which
stride) rides in the file's schema metadata."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

PROGRESS_FILE = "sarm_progress.parquet"
PROGRESS_SCHEMA = pa.schema([
    ("index", pa.int64()),  # the frame's row in the dataset
    ("episode_index", pa.int64()),
    ("frame_index", pa.int64()),  # within its episode
    ("progress_sparse", pa.float32()),  # normalised task progress, [0, 1]
])


def progress_table(
    index: Sequence[int], episode_index: Sequence[int], frame_index: Sequence[int], progress_sparse: Sequence[float],
    provenance: Mapping[str, str],
) -> pa.Table:
    columns = (index, episode_index, frame_index, progress_sparse)
    table = pa.table([pa.array(column, type=f.type) for column, f in zip(columns, PROGRESS_SCHEMA, strict=True)],
                     schema=PROGRESS_SCHEMA)
    return table.replace_schema_metadata({f"sarm.{key}": value for key, value in provenance.items()})


def progress_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()
