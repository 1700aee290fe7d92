"""A written qa.parquet reads back with plain pyarrow, pandas, polars, DuckDB and HF datasets."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from qa_builder.qa.generate import QAConfig, build_qa
from qa_builder.qa.schema import QA_COLUMNS, QA_SCHEMA, write_qa_parquet


def _case(i: int):
    rid = f"s5{i:07d}"
    sentences = [{"sentence_id": 0, "section": "findings", "sentence": "Small left pleural effusion."},
                 {"sentence_id": 1, "section": "findings", "sentence": "The osseous structures are intact."},
                 {"sentence_id": 2, "section": "impression", "sentence": "Pneumonia cannot be excluded."}]
    base = {"report_id": rid, "start": 0, "end": 1, "location": None, "descriptor": None, "size": None,
            "change": None, "temporality": "current", "chestxray14": None}
    mentions = [
        {**base, "mention_id": 0, "section": "findings", "sentence_id": 0, "sentence": sentences[0]["sentence"],
         "text": "effusion", "concept": "pleural_effusion", "certainty": "positive", "laterality": "left",
         "severity": "small", "chexpert": "Pleural Effusion"},
        {**base, "mention_id": 1, "section": "impression", "sentence_id": 2, "sentence": sentences[2]["sentence"],
         "text": "pneumonia", "concept": "pneumonia", "certainty": "uncertain", "laterality": None,
         "severity": None, "chexpert": "Pneumonia"},
    ]
    report = {"report_id": rid, "subject_id": None if i % 5 == 0 else f"1{i // 2:07d}", "study_id": f"5{i:07d}",
              "findings": "Small left pleural effusion. The osseous structures are intact.",
              "impression": "Pneumonia cannot be excluded."}
    return report, sentences, mentions


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory):
    table = build_qa([_case(i) for i in range(40)], QAConfig())
    path = tmp_path_factory.mktemp("qa") / "qa.parquet"
    write_qa_parquet(table, path)
    return path, table


def test_pyarrow_schema_and_bytes(qa_file, tmp_path):
    path, table = qa_file
    back = pq.read_table(path)
    assert back.schema.equals(QA_SCHEMA, check_metadata=True) and back.equals(table)
    assert back.column("evidence").to_pylist()[:1] and [] in back.column("evidence").to_pylist()  # bones: empty list
    assert None in back.column("subject_id").to_pylist() and "" not in back.column("subject_id").to_pylist()
    again = tmp_path / "qa.parquet"
    write_qa_parquet(build_qa([_case(i) for i in range(40)], QAConfig()), again)
    assert again.read_bytes() == path.read_bytes()  # same input and config -> byte-identical


def test_pandas(qa_file):
    pd = pytest.importorskip("pandas")
    path, table = qa_file
    df = pd.read_parquet(path)
    assert list(df.columns) == list(QA_COLUMNS) and len(df) == table.num_rows
    fine = df[df.granularity == "fine"]
    assert fine.evidence.map(len).min() >= 1
    assert set(df.split) <= {"train", "validate", "test"}


def test_polars(qa_file):
    pl = pytest.importorskip("polars")
    path, table = qa_file
    df = pl.read_parquet(path)
    assert df.columns == list(QA_COLUMNS) and df.height == table.num_rows
    assert df.schema["evidence"] == pl.List(pl.Int32)
    counts = df.group_by("question_type").len().sort("question_type")
    assert counts["len"].sum() == table.num_rows


def test_duckdb(qa_file):
    duckdb = pytest.importorskip("duckdb")
    path, table = qa_file
    con = duckdb.connect()
    n, with_ev = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE len(evidence) > 0) FROM read_parquet('{path}')").fetchone()
    assert n == table.num_rows and with_ev > 0
    (answer,) = con.execute(f"SELECT answer FROM read_parquet('{path}') WHERE question_type = 'presence' "
                            "AND concept = 'pneumonia' LIMIT 1").fetchone()
    assert answer == "possibly"


def test_hf_datasets(qa_file, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    path, table = qa_file
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == table.num_rows and ds.column_names == list(QA_COLUMNS)
    row = ds[0]
    assert isinstance(row["evidence"], list) and row["qa_id"] == table.column("qa_id")[0].as_py()
