"""Helpers shared by tests/test_phantom_*.py: build small corpora once per test session."""
from __future__ import annotations

import atexit
import csv
import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from .generate import Options, generate

_ROOT = Path(tempfile.mkdtemp(prefix="phantom-tests-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


@lru_cache(maxsize=None)
def corpus(n: int = 40, seed: int = 0, size: int = 128, workers: int = 1, dicom: bool = False,
           jpeg: bool = False, tag: str = "") -> Path:
    """Generate (once per process) and return the folder of a small corpus."""
    out = _ROOT / f"n{n}-s{seed}-z{size}-w{workers}-d{int(dicom)}-j{int(jpeg)}{tag}"
    generate(Options(out=str(out), n=n, seed=seed, size=size, workers=workers, dicom=dicom,
                     jpeg=jpeg, progress=False))
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_truth(out: Path) -> list[dict]:
    with open(out / "truth.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def tree_digest(out: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under out."""
    import hashlib
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}
