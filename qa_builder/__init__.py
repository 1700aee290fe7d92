"""Radiology reports -> findings, labels and QA tables (Parquet)."""

__version__ = "0.1.0"
