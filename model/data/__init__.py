"""Data side of QFT: Parquet tables, image index and loading, the uint8 image cache, tokenizers, the dataset."""
