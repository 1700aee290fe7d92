"""Arrow schemas of the output tables and a streaming, atomic Parquet writer.

The schemas here are the contract documented in README.md; `model/` reads these files without
importing this package.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from qa_builder.qa.schema import QA_SCHEMA

SECTION_COLUMNS = ("findings", "impression", "indication", "comparison", "history", "technique", "examination")

FINDINGS_SCHEMA = pa.schema([
    ("report_id", pa.string()), ("mention_id", pa.int32()), ("section", pa.string()),
    ("sentence_id", pa.int32()), ("sentence", pa.string()), ("start", pa.int32()), ("end", pa.int32()),
    ("text", pa.string()), ("concept", pa.string()), ("certainty", pa.string()),
    ("laterality", pa.string()), ("location", pa.string()), ("severity", pa.string()),
    ("descriptor", pa.string()), ("size", pa.string()), ("change", pa.string()),
    ("temporality", pa.string()), ("chexpert", pa.string()), ("chestxray14", pa.string()),
    ("differential", pa.bool_()), ("qualifier", pa.string()), ("explanation", pa.string()),
    ("probable", pa.bool_()),
])
LABELS_SCHEMA = pa.schema([
    ("report_id", pa.string()), ("scheme", pa.string()), ("label", pa.string()), ("value", pa.int8()),
])
REJECTS_SCHEMA = pa.schema([("source", pa.string()), ("report_id", pa.string()), ("reason", pa.string())])


# Columns of long, mostly distinct text (per table). Not findings.sentence: sentences recur across
# reports ("No pneumothorax."), and its dictionary pages make the file smaller.
FREE_TEXT_COLUMNS = {
    "reports": ("source", *SECTION_COLUMNS),
    "qa": ("qa_id", "answer", "evidence_text"),
    "rejects": ("source", "reason"),
}


def reports_schema(passthrough: list[str]) -> pa.Schema:
    fixed = ["report_id", "subject_id", "study_id", *SECTION_COLUMNS, "source"]
    extra = [c for c in passthrough if c not in fixed]
    return pa.schema([(name, pa.string()) for name in fixed + extra])


def table_schemas(passthrough: list[str]) -> dict[str, pa.Schema]:
    return {
        "reports": reports_schema(passthrough),
        "findings": FINDINGS_SCHEMA,
        "labels": LABELS_SCHEMA,
        "qa": QA_SCHEMA,
        "rejects": REJECTS_SCHEMA,
    }


class TableWriters:
    """One ParquetWriter per table in a staging folder; `commit()` moves them into OUT atomically.

    Files appear in OUT only complete (os.replace is atomic on one filesystem); a crash leaves OUT as
    it was plus a `.partial-*` folder, never a truncated table.
    """

    def __init__(self, out: Path, schemas: dict[str, pa.Schema]):
        self.out = out
        self.stage = out / f".partial-{os.getpid()}"
        shutil.rmtree(self.stage, ignore_errors=True)
        self.stage.mkdir(parents=True)
        self.schemas = schemas
        self.writers = {name: self._open(name) for name in schemas}
        self.rows = {name: 0 for name in schemas}

    def _open(self, name: str) -> pq.ParquetWriter:
        # Fixed writer options so that the same rows give the same bytes. Free-text columns (nearly
        # every value distinct) skip dictionary encoding and min/max statistics: both cost write time
        # and buy nothing there; ids and categorical columns keep them (filters on report_id or concept).
        schema = self.schemas[name]
        keyed = [f.name for f in schema if f.name not in FREE_TEXT_COLUMNS.get(name, ())]
        return pq.ParquetWriter(self.stage / f"{name}.parquet", schema, compression="zstd", compression_level=3,
                                write_statistics=keyed, use_dictionary=keyed)

    def replace(self, name: str, transform) -> None:
        """Rewrite one staged table as `transform(table)` (a corpus-level pass, e.g. yes/no balancing)."""
        self.writers[name].close()
        table = transform(pq.read_table(self.stage / f"{name}.parquet"))
        self.writers[name] = self._open(name)
        self.writers[name].write_table(table)
        self.rows[name] = table.num_rows

    def write(self, name: str, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.writers[name].write_batch(batch)
            self.rows[name] += batch.num_rows

    def close(self) -> None:
        """Finish the Parquet files in the staging folder (readable there before `commit`)."""
        for w in self.writers.values():
            w.close()
        self.writers = {}

    def commit(self, extra_files: dict[str, bytes] | None = None) -> None:
        self.close()
        for name, data in (extra_files or {}).items():
            (self.stage / name).write_bytes(data)
        for path in sorted(self.stage.iterdir()):
            os.replace(path, self.out / path.name)
        self.stage.rmdir()

    def abort(self) -> None:
        for w in self.writers.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - best effort while already failing
                pass
        shutil.rmtree(self.stage, ignore_errors=True)
