"""Image files -> uint8 grey arrays, and the study -> image-path index.

Loading: JPEG/PNG via Pillow (8- or 16-bit), DICOM via pydicom (modality LUT, VOI LUT / windowing,
MONOCHROME1 inversion, compressed transfer syntaxes through the pylibjpeg plugins).

Index sources:
  (a) a MIMIC-CXR-JPG-like root: ``mimic-cxr-2.0.0-metadata.csv`` (dicom_id, subject_id, study_id,
      ViewPosition) + ``files/pXX/pSUBJECT/sSTUDY/<dicom_id>.{jpg,png,dcm}``; without the CSV the tree is
      walked and views are unknown;
  (b) a CSV with columns ``study_id, path[, view]`` (paths relative to the CSV or absolute).
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger("qft")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".dcm")
FRONTAL = ("PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD")
LATERAL = ("LATERAL", "LL", "RL", "LAO", "RAO", "LPO")
METADATA_NAME = "mimic-cxr-2.0.0-metadata.csv"


class ImageReadError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------------
# decoding


def _to_uint8(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    a = ds.pixel_array  # decodes compressed syntaxes via the installed pylibjpeg plugins
    if a.ndim == 3 and a.shape[-1] in (3, 4) and ds.get("SamplesPerPixel", 1) > 1:
        a = a[..., :3].mean(-1)
    elif a.ndim == 3:  # multi-frame: first frame
        a = a[0]
    a = apply_modality_lut(a, ds)
    a = apply_voi_lut(a, ds, index=0) if ("WindowCenter" in ds or "VOILUTSequence" in ds) else a
    out = _to_uint8(a)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1: low values are white
    return out


def read_image(path: str | Path, at_least: int | None = None) -> np.ndarray:
    """Grey uint8 (H, W), full size; with ``at_least``, a JPEG may come decoded at 1/2, 1/4 or 1/8 scale (libjpeg's
    DCT scaling, much less work than decoding every pixel of a 2,500 x 3,000 radiograph) as long as both sides
    stay >= at_least. Raises ImageReadError naming the file."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".dcm":
            return read_dicom(path)
        with Image.open(path) as im:
            if at_least and im.format == "JPEG":
                im.draft("L", (at_least, at_least))
            if im.mode in ("I;16", "I;16B", "I", "F"):
                return _to_uint8(np.asarray(im))
            return np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except Exception as e:  # noqa: BLE001 - report any decoder failure with the file name
        raise ImageReadError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e


def resize_square(a: np.ndarray, size: int) -> np.ndarray:
    """Resize the whole image to size x size (no crop: X-rays are near square, edges carry findings)."""
    if a.shape == (size, size):
        return a
    return np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR, reducing_gap=3.0))


def load_resized(path: str | Path, size: int) -> np.ndarray:
    # JPEGs decoded at >= 2x the target, then resized as any image: on a real radiograph 99 % of the pixels are
    # within 2 grey levels of a full decode (mean 0.3)
    return resize_square(read_image(path, at_least=2 * size), size)


# ----------------------------------------------------------------------------------------------------
# index


@dataclass(frozen=True)
class ImageRecord:
    study_key: str
    path: str  # absolute
    view: str  # upper-case ViewPosition or ''


def _norm_id(x: str) -> str:
    x = str(x).strip()
    return x[:-2] if x.endswith(".0") and x[:-2].isdigit() else x  # '5041.0' from float-typed CSVs


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def index_mimic_root(root: Path) -> list[ImageRecord]:
    meta = root / METADATA_NAME
    files = root / "files"
    out, missing = [], []
    if meta.exists():
        rows = _read_csv(meta)
        need = {"dicom_id", "subject_id", "study_id"}
        if rows and not need <= set(rows[0]):
            raise ValueError(f"{meta}: needs columns {sorted(need)}, has {sorted(rows[0])}")
        for i, r in enumerate(rows):
            subj, study = _norm_id(r["subject_id"]), _norm_id(r["study_id"])
            folder = files / f"p{subj[:2]}" / f"p{subj}" / f"s{study}"
            for suffix in IMAGE_SUFFIXES:
                p = folder / f"{r['dicom_id']}{suffix}"
                if p.exists():
                    out.append(ImageRecord(study, str(p), (r.get("ViewPosition") or "").strip().upper()))
                    break
            else:
                missing.append(f"{meta}:row {i + 2} ({folder / r['dicom_id']}.*)")
    elif files.is_dir():
        for p in sorted(files.glob("p*/p*/s*/*")):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                out.append(ImageRecord(p.parent.name[1:], str(p), ""))
    else:
        raise FileNotFoundError(f"{root}: neither {METADATA_NAME} nor a files/ tree")
    if missing:
        log.warning("images: %d metadata row(s) without an image file, skipped; first: %s", len(missing), missing[0])
    return out


def index_csv(path: Path) -> list[ImageRecord]:
    rows = _read_csv(path)
    if not rows or "study_id" not in rows[0] or "path" not in rows[0]:
        raise ValueError(f"{path}: an image CSV needs columns study_id, path[, view]")
    out, missing = [], []
    for i, r in enumerate(rows):
        p = Path(r["path"])
        p = p if p.is_absolute() else path.parent / p
        if not p.exists():
            missing.append(f"{path}:row {i + 2} ({p})")
            continue
        out.append(ImageRecord(_norm_id(r["study_id"]), str(p.resolve()), (r.get("view") or "").strip().upper()))
    if missing:
        log.warning("images: %d CSV row(s) whose file does not exist, skipped; first: %s", len(missing), missing[0])
    return out


def build_index(source: str | Path) -> list[ImageRecord]:
    source = Path(source)
    if source.is_file() and source.name == METADATA_NAME:  # the metadata CSV itself: its folder is the root
        recs = index_mimic_root(source.parent)
    elif source.is_file() and source.suffix.lower() == ".csv":
        recs = index_csv(source)
    elif source.is_dir():
        recs = index_mimic_root(source)
    else:
        raise FileNotFoundError(f"{source}: expected an image root folder or a CSV of study_id,path[,view]")
    if not recs:
        raise ValueError(f"{source}: no images found")
    return recs


def pick_views(records: list[ImageRecord]) -> tuple[int, int | None]:
    """(frontal-ish index, lateral index or None) among one study's images: PA > AP > other frontal > unknown."""
    def rank(r: ImageRecord) -> int:
        if r.view in FRONTAL:
            return FRONTAL.index(r.view)
        return 50 if r.view in LATERAL else 20
    order = sorted(range(len(records)), key=lambda i: (rank(records[i]), records[i].path))
    front = order[0]
    lat = next((i for i in order if records[i].view in LATERAL and i != front), None)
    return front, lat
