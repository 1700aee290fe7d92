"""QA pairs from parsed reports: the qa.parquet table, its splits and its data card.

- generate: QAConfig, generate_qa (one report), build_qa / balance_table (a corpus)
- splits:   patient-level hashed splits, MIMIC's official split file
- schema:   QA_SCHEMA (the qa.parquet contract) and writers
- card:     stats.json and data_card.md
- vocab:    loading concepts.yaml and templates/<language>.yaml (data a user extends)

Kept import-free so that `qa_builder.qa.schema` stays cheap to import.
"""
