"""File formats: image/mask encoding, DICOM, and the streamed corpus-level tables.

All encoders are byte-deterministic: Pillow writes no timestamps into PNG/JPEG unless asked,
DICOM UIDs and dates come from the ids, and tables are written in study order.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from . import ids
from .spec import CHEXPERT_LABELS

METADATA_COLUMNS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                    "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
                    "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
                    "PatientOrientationCodeSequence_CodeMeaning"]
CHEXPERT_COLUMNS = ["subject_id", "study_id", *CHEXPERT_LABELS]
BOX_COLUMNS = ["dicom_id", "study_id", "finding", "x", "y", "w", "h", "laterality", "severity",
               "certainty", "view", "mask"]
SPLIT_COLUMNS = ["dicom_id", "study_id", "subject_id", "split"]

TABLES = {
    "metadata": ("mimic-cxr-2.0.0-metadata.csv", METADATA_COLUMNS),
    "chexpert": ("mimic-cxr-2.0.0-chexpert.csv", CHEXPERT_COLUMNS),
    "split": ("mimic-cxr-2.0.0-split.csv", SPLIT_COLUMNS),
    "boxes": ("boxes.csv", BOX_COLUMNS),
}
OWNED = ["files", "masks", "truth.jsonl", "boxes_coco.json", "phantom_manifest.json",
         *[name for name, _ in TABLES.values()]]
MANIFEST = "phantom_manifest.json"

VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}
PROCEDURE = {"PA+LATERAL": "CHEST (PA AND LAT)", "AP+LATERAL": "CHEST (AP AND LAT)",
             "PA": "CHEST (PA)", "AP": "CHEST (PORTABLE AP)"}


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # level 3: ~40% faster than the default 6 on noisy radiographs for ~10% larger files
    Image.fromarray(array, "L").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def encode_jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, "L").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def encode_mask(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_dicom(path: Path, image: np.ndarray, *, dicom_id: str, study, view: str, spacing_mm: float) -> None:
    """12-bit CR DICOM; about one in five is MONOCHROME1 (inverted) to exercise that code path."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sop_class = "1.2.840.10008.5.1.4.1.1.1"      # Computed Radiography Image Storage
    monochrome1 = int(dicom_id[0], 16) < 3
    values = image.astype(np.uint16) * 16 + 8    # 8-bit -> 12-bit; the window maps it back
    if monochrome1:
        values = 4095 - values
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ids.dicom_uid("image", dicom_id)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ids.dicom_uid("implementation")
    meta.ImplementationVersionName = "RADQA_PHANTOM1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = ids.dicom_uid("study", study.study_id)
    ds.SeriesInstanceUID = ids.dicom_uid("series", study.study_id, view)
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.StudyID = study.study_id
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.Manufacturer = "radqa phantom (synthetic)"
    ds.PatientName = f"PHANTOM^{study.subject_id}"
    ds.PatientID = study.subject_id
    ds.PatientSex = study.sex
    ds.PatientAge = f"{study.age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "LL" if view == "LATERAL" else view
    ds.SeriesNumber = 1
    ds.InstanceNumber = study.views.index(view) + 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.PixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.PixelData = values.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def split_of(subject_id: str) -> str:
    """Patient-level split from a hash of the subject id (80/10/10)."""
    import hashlib
    bucket = int(hashlib.sha256(subject_id.encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 80 else "validate" if bucket < 90 else "test"


def prepare_out(out: Path) -> None:
    """Create OUT; replace a previous phantom corpus there, but never touch anything else."""
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST).exists():
            raise SystemExit(f"{out} is not empty and holds no {MANIFEST}; refusing to write into it")
        for name in OWNED:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


class TableWriter:
    """The corpus-level tables, appended study by study in order (memory stays flat at 100k)."""

    def __init__(self, out: Path, categories: list[str], devices: set[str]):
        self.out = out
        self._files = {}
        self._writers = {}
        for key, (name, columns) in TABLES.items():
            fh = open(out / name, "w", newline="", encoding="utf-8")
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(columns)
            self._files[key], self._writers[key] = fh, writer
        self.truth = open(out / "truth.jsonl", "w", encoding="utf-8")
        # COCO needs images before annotations: spool both, join at close
        self._coco_images = open(out / ".coco_images.part", "w", encoding="utf-8")
        self._coco_annotations = open(out / ".coco_annotations.part", "w", encoding="utf-8")
        self.categories = categories
        self.devices = devices
        self.category_id = {c: i + 1 for i, c in enumerate(categories)}
        self.image_count = 0
        self.annotation_count = 0

    def add_study(self, result: dict) -> None:
        for key in TABLES:
            for row in result[key]:
                self._writers[key].writerow(row)
        self.truth.write(json.dumps(result["truth"], separators=(",", ":")) + "\n")
        for image in result["coco_images"]:
            self.image_count += 1
            image_id = self.image_count
            self._coco_images.write(json.dumps({"id": image_id, **image["image"]}, separators=(",", ":")) + "\n")
            for ann in image["annotations"]:
                self.annotation_count += 1
                record = {"id": self.annotation_count, "image_id": image_id,
                          "category_id": self.category_id[ann["finding"]], **ann}
                self._coco_annotations.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self, info: dict) -> None:
        for fh in self._files.values():
            fh.close()
        self.truth.close()
        self._coco_images.close()
        self._coco_annotations.close()
        categories = [{"id": self.category_id[c], "name": c,
                       "supercategory": "device" if c in self.devices else "finding"}
                      for c in self.categories]
        images_part = self.out / ".coco_images.part"
        annotations_part = self.out / ".coco_annotations.part"
        with open(self.out / "boxes_coco.json", "w", encoding="utf-8") as fh:
            fh.write('{"info":' + json.dumps(info, separators=(",", ":")) + ',"licenses":[],"categories":'
                     + json.dumps(categories, separators=(",", ":")) + ',"images":[')
            _copy_joined(images_part, fh)
            fh.write('],"annotations":[')
            _copy_joined(annotations_part, fh)
            fh.write("]}\n")
        os.remove(images_part)
        os.remove(annotations_part)


def _copy_joined(part: Path, fh) -> None:
    with open(part, encoding="utf-8") as src:
        first = True
        for line in src:
            if not first:
                fh.write(",")
            fh.write(line.rstrip("\n"))
            first = False
