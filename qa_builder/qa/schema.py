"""The qa.parquet schema (README "Output schema") and a columnar, deterministic writer."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

QA_SCHEMA_VERSION = "1"

QA_SCHEMA = pa.schema(
    [
        pa.field("qa_id", pa.string(), nullable=False),
        pa.field("report_id", pa.string(), nullable=False),
        pa.field("subject_id", pa.string()),
        pa.field("granularity", pa.string(), nullable=False),
        pa.field("question_type", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("answer_type", pa.string(), nullable=False),
        pa.field("concept", pa.string()),
        pa.field("region", pa.string()),
        # Non-null list (possibly empty) so readers never special-case nulls; child named "element"
        # as Parquet writes it, so a table read back equals this schema exactly.
        pa.field("evidence", pa.list_(pa.field("element", pa.int32(), nullable=False)), nullable=False),
        pa.field("evidence_text", pa.string()),
        pa.field("split", pa.string(), nullable=False),
    ],
    metadata={b"radqa.table": b"qa", b"radqa.schema_version": QA_SCHEMA_VERSION.encode()},
)

QA_COLUMNS: tuple[str, ...] = tuple(QA_SCHEMA.names)


def rows_to_table(rows: Sequence[dict] | Iterable[dict]) -> pa.Table:
    """QA rows (dicts as from ``generate_qa``) -> table with QA_SCHEMA.

    Columnar on purpose: ``pa.Table.from_pylist`` is several times slower at ~20 rows per report.
    """
    rows = rows if isinstance(rows, (list, tuple)) else list(rows)
    if not rows:
        return empty_table()
    arrays = [pa.array([r[name] for r in rows], type=QA_SCHEMA.field(name).type) for name in QA_COLUMNS]
    return pa.Table.from_arrays(arrays, schema=QA_SCHEMA)


def tuples_to_table(rows: Sequence[tuple]) -> pa.Table:
    """Rows as tuples in QA_COLUMNS order (QAGenerator.rows) -> table; the fast path."""
    if not rows:
        return empty_table()
    columns = list(zip(*rows))
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, QA_SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=QA_SCHEMA)


def rows_to_columns(rows: Sequence[tuple]) -> dict[str, list]:
    """Tuples in QA_COLUMNS order (QAGenerator.rows) -> {column: values}, e.g. for a batch writer."""
    if not rows:
        return {name: [] for name in QA_COLUMNS}
    return dict(zip(QA_COLUMNS, map(list, zip(*rows))))


def empty_table() -> pa.Table:
    return QA_SCHEMA.empty_table()


def write_qa_parquet(table: pa.Table, path: str | Path) -> None:
    """Write qa.parquet (zstd). Same table -> byte-identical file (no timestamps are stored)."""
    if not table.schema.equals(QA_SCHEMA, check_metadata=False):
        table = table.cast(QA_SCHEMA)
    table = table.replace_schema_metadata(QA_SCHEMA.metadata)
    pq.write_table(table, str(path), compression="zstd", row_group_size=256 * 1024)
