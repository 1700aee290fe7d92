"""Deterministic MIMIC-like identifiers and random streams derived from (seed, subject index).

Every subject gets its own random streams, so a subject's studies do not depend on how many
subjects came before it, on --workers, or on the order results come back in. `--n 300` is
therefore a prefix of `--n 1000` with the same seed (except that the last subject may be cut short).
"""
from __future__ import annotations

import hashlib

import numpy as np

MAX_STUDIES_PER_SUBJECT = 8       # id arithmetic reserves this many study slots per subject
_SUBJECT_STRIDE, _STUDY_STRIDE = 7919, 4099   # primes, coprime with 10**7: bijective scrambles

# Separate streams: wording/truth vs anatomy vs per-image noise, so that tuning the renderer
# never changes the reports and vice versa.
STREAM_PLAN, STREAM_CLINICAL, STREAM_ANATOMY, STREAM_IMAGE = 0, 1, 2, 3


def rng(seed: int, subject_index: int, stream: int, *extra: int) -> np.random.Generator:
    seq = np.random.SeedSequence(entropy=seed, spawn_key=(subject_index, stream, *extra))
    return np.random.Generator(np.random.PCG64(seq))


def _offset(seed: int, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{seed}".encode()).digest()[:8], "big") % 10**7


def subject_id(seed: int, subject_index: int) -> str:
    """8 digits starting with 1, unique per index for up to 10 million subjects."""
    return str(10**7 + (subject_index * _SUBJECT_STRIDE + _offset(seed, "subject")) % 10**7)


def study_id(seed: int, subject_index: int, study_index: int) -> str:
    """8 digits starting with 5, unique for up to 1.25 million subjects."""
    if study_index >= MAX_STUDIES_PER_SUBJECT:
        raise ValueError("too many studies for one subject")
    slot = subject_index * MAX_STUDIES_PER_SUBJECT + study_index
    return str(5 * 10**7 + (slot * _STUDY_STRIDE + _offset(seed, "study")) % 10**7)


def dicom_id(seed: int, study: str, view: str, number: int) -> str:
    """MIMIC-style '0a1b2c3d-4e5f6a7b-8c9d0e1f-2a3b4c5d-6e7f8a9b' from a hash of the image identity."""
    digest = hashlib.sha1(f"phantom:{seed}:{study}:{view}:{number}".encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def dicom_uid(*parts: str) -> str:
    """Deterministic DICOM UID under the ISO 2.25 (UUID-derived) root."""
    digest = hashlib.sha256(":".join(("phantom",) + parts).encode()).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big"))
