"""QA pairs from parsed reports: the qa.parquet table, its splits and its data card.

- generate: generate_qa (one report), build_qa (a corpus); the rules per question family in coarse,
  region, closed, attribute, abnormality (fine.py plans a concept's pairs), wording, text, balance
- config:   QAConfig and the question types
- splits:   patient-level hashed splits, MIMIC's official split file
- schema:   QA_SCHEMA (the qa.parquet contract) and writers
- card:     stats.json and data_card.md
- vocab:    loading concepts.yaml and templates/<language>.yaml (data a user extends)

Kept import-free so that `qa_builder.qa.schema` stays cheap to import.
"""
