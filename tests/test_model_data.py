"""Data side of model/: tables, image index + loading (real PNG / DICOM / JPEG-2000), cache, tokenizer, batches."""
import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import DataConfig
from model.data.cache import FAILED, prepare_cache
from model.data.dataset import IGNORE, Collate, StepSampler, StudyDataset, build_corpus, join_images
from model.data.images import ImageReadError, build_index, pick_views, read_image
from model.data.tables import load_studies
from model.data.tokenizer import TextTokenizer, train_wordpiece
from model.synthetic import make_corpus

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root / "data", root / "images", n_studies=30, size=40, seed=1)
    return root


def test_tables_group_qa_and_split(corpus_dir):
    studies = load_studies(corpus_dir / "data")
    assert len(studies) == 30
    s = studies[0]
    assert s.key == "50000000" and s.report_id == "s50000000"
    assert set(s.qa) <= {"coarse", "middle", "fine"} and s.qa["coarse"]
    assert not studies[5].qa.get("fine")  # every fifth study has no fine pair
    assert {x.split for x in studies} == {"train", "validate", "test"}


def test_tables_missing_column_is_one_clear_error(tmp_path, corpus_dir):
    import pyarrow.parquet as pq
    t = pq.read_table(corpus_dir / "data" / "qa.parquet").drop(["split"])
    (tmp_path / "d").mkdir()
    pq.write_table(t, tmp_path / "d" / "qa.parquet")
    pq.write_table(pq.read_table(corpus_dir / "data" / "reports.parquet"), tmp_path / "d" / "reports.parquet")
    with pytest.raises(ValueError, match=r"qa.parquet: missing column\(s\) \['split'\]"):
        load_studies(tmp_path / "d")


def test_index_metadata_root_and_views(corpus_dir):
    recs = build_index(corpus_dir / "images")
    assert len(recs) == 45  # 30 frontal + 15 lateral
    assert build_index(corpus_dir / "images" / "mimic-cxr-2.0.0-metadata.csv") == recs
    studies, per = join_images(load_studies(corpus_dir / "data"), recs)
    f, lat = pick_views(per[0])
    assert per[0][f].view == "PA" and per[0][lat].view == "LATERAL"
    assert pick_views(per[1])[1] is None


def test_index_csv_relative_paths_and_missing_rows(tmp_path, corpus_dir, caplog):
    img = next((corpus_dir / "images" / "files").rglob("*.png"))
    rows = [{"study_id": "s50000000", "path": str(img), "view": "pa"},
            {"study_id": "50000001", "path": "nope/missing.png", "view": ""}]
    with open(tmp_path / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["study_id", "path", "view"])
        w.writeheader()
        w.writerows(rows)
    with caplog.at_level(logging.WARNING, logger="qft"):
        recs = build_index(tmp_path / "index.csv")
    assert len(recs) == 1 and recs[0].view == "PA"
    assert "1 CSV row(s) whose file does not exist" in caplog.text and "row 3" in caplog.text
    # study key 's50000000' matches a report_id when no study_id matches
    studies, per = join_images(load_studies(corpus_dir / "data"), recs)
    assert [s.report_id for s in studies] == ["s50000000"]


@pytest.mark.skipif(not SHARED.exists(), reason="shared images not present")
@pytest.mark.parametrize("name,shape", [("00000001_000.png", (512, 512)),
                                        ("1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", (1024, 1024)),
                                        ("RG1_J2KI.dcm", (1955, 1841))])
def test_read_real_images(name, shape):
    a = read_image(SHARED / name)
    assert a.dtype == np.uint8 and a.shape == shape and a.max() > 200 and a.std() > 20


@pytest.mark.skipif(not SHARED.exists(), reason="shared images not present")
def test_monochrome1_is_inverted_and_jpeg_reads(tmp_path):
    import pydicom
    ds = pydicom.dcmread(SHARED / "RG1_J2KI.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    a = read_image(SHARED / "RG1_J2KI.dcm")
    h, w = a.shape  # lungs (dark after inversion) are darker than the mediastinum column
    assert a[h // 3: h // 2, w // 5: w // 3].mean() < a[h // 3: h // 2, int(w * 0.45): int(w * 0.55)].mean()
    from PIL import Image
    Image.open(SHARED / "00000001_000.png").convert("L").save(tmp_path / "x.jpg", quality=90)
    assert read_image(tmp_path / "x.jpg").shape == (512, 512)


@pytest.mark.skipif(not SHARED.exists(), reason="shared images not present")
def test_jpeg_decodes_at_reduced_scale_for_the_cache_with_the_same_pixels(tmp_path):
    """load_resized lets libjpeg decode at 1/2..1/8 scale while both sides stay >= 2x the target: far less work on
    a full-size radiograph, and 99 % of the cached pixels stay within 2 grey levels of a full decode."""
    from PIL import Image

    from model.data.images import load_resized, resize_square
    png = Image.open(SHARED / "00000001_000.png")
    png.convert("L").save(tmp_path / "grey.jpg", quality=95)
    png.convert("RGB").save(tmp_path / "rgb.jpg", quality=95)
    for name in ("grey.jpg", "rgb.jpg"):
        assert read_image(tmp_path / name).shape == (512, 512)
        assert read_image(tmp_path / name, at_least=100).shape == (128, 128)  # 1/4: 1/8 would be 64 < 100
        full = resize_square(read_image(tmp_path / name), 64)
        diff = np.abs(load_resized(tmp_path / name, 64).astype(int) - full)
        assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 2 and diff.max() <= 6
    assert read_image(SHARED / "00000001_000.png", at_least=100).shape == (512, 512)  # only JPEGs are drafted


def test_sixteen_bit_png_is_scaled(tmp_path):
    from PIL import Image
    a = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 4 + 1000)
    Image.fromarray(a).save(tmp_path / "x16.png")
    out = read_image(tmp_path / "x16.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255 and out[0, 0] < out[-1, -1]


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="bad.png: cannot decode"):
        read_image(tmp_path / "bad.png")


def test_cache_resumes_and_counts_failures(tmp_path, corpus_dir, caplog):
    paths = sorted(str(p) for p in (corpus_dir / "images" / "files").rglob("*.png"))[:6]
    (tmp_path / "bad.png").write_bytes(b"broken")
    paths.append(str(tmp_path / "bad.png"))
    with caplog.at_level(logging.WARNING, logger="qft"):
        c = prepare_cache(paths, tmp_path / "cache", 16, progress=False)
    assert c.ok.sum() == 6 and c.status[-1] == FAILED and "1 image(s) could not be read" in caplog.text
    assert c[0].shape == (16, 16) and c[0].dtype == np.uint8
    # simulate an interrupted run: mark two rows to-do again; only those are redone
    status = np.memmap(c.folder / "status.u8", np.uint8, "r+", shape=(7,))
    status[:2] = 0
    status.flush()
    before = (c.folder / "images.u8").stat().st_mtime_ns
    c2 = prepare_cache(paths, tmp_path / "cache", 16, progress=False)
    assert c2.ok.sum() == 6 and np.array_equal(c2[0], c[0]) and c2.folder == c.folder
    assert len((c.folder / "failures.txt").read_text().splitlines()) == 1  # failed rows are not retried
    assert before <= (c.folder / "images.u8").stat().st_mtime_ns


def test_tokenizer_train_save_load_and_hf_dir(tmp_path):
    tok = train_wordpiece(["There is a left pleural effusion.", "The heart is enlarged."] * 5, 200)
    ids = tok.encode(["left effusion"])[0]
    assert ids and tok.decode(ids) == "left effusion"
    tok.save(tmp_path / "t")
    tok2 = TextTokenizer.load(tmp_path / "t")
    assert tok2.encode(["left effusion"])[0] == ids and tok2.eos_id == tok.eos_id
    # a transformers tokenizer saved locally (as a user's clinical BERT would ship) loads by path
    from transformers import PreTrainedTokenizerFast
    hf = PreTrainedTokenizerFast(tokenizer_object=tok.tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                 sep_token="[SEP]", mask_token="[MASK]")
    hf.save_pretrained(tmp_path / "hf")
    tok3 = TextTokenizer.load(tmp_path / "hf")
    assert tok3.encode(["left effusion"])[0] == ids and tok3.bos_id == tok.cls_id and tok3.eos_id == tok.sep_id


def test_batches_mask_prompt_and_missing_granularity(tmp_path, corpus_dir):
    cfg = DataConfig(vocab_size=300, fine_tokens=12)
    c = build_corpus(corpus_dir / "data", corpus_dir / "images", tmp_path / "cache", 32, cfg, progress=False)
    ds = StudyDataset(c, cfg)
    item = ds[(1, 7)]
    assert item["report"][0] == c.tokenizer.cls_id and item["report"][-1] == c.tokenizer.sep_id
    inp, tgt = item["coarse"], item["coarse_targets"]
    sep = list(inp).index(c.tokenizer.sep_id)
    assert (tgt[:sep] == IGNORE).all() and (tgt[sep:] != IGNORE).all() and tgt[-1] == c.tokenizer.eos_id
    assert len(item["fine"]) <= 12
    assert (ds[(5, 0)]["fine_targets"] == IGNORE).all()  # study 5 has no fine pair: masked
    assert ds[(1, 7)]["coarse"].tolist() == inp.tolist()  # same seed, same pair
    b = Collate(c.tokenizer.pad_id)([ds[(i, i)] for i in range(4)])
    assert b["image0"].dtype == torch.uint8 and b["image0"].shape == (4, 32, 32)
    assert b["report"].shape == b["report_mask"].shape and b["coarse"].shape == b["coarse_targets"].shape
    assert b["two_views"].tolist() == [True, False, True, False]
    for g in ("coarse", "middle", "fine"):  # the flat target positions the model projects to the vocabulary
        t = b[g + "_targets"].flatten()
        assert (t[b[g + "_positions"]] != IGNORE).all() and len(b[g + "_positions"]) == int((t != IGNORE).sum())


def test_step_sampler_shards_and_resumes():
    idx = np.arange(20)
    full = list(StepSampler(idx, 3, seed=0, total_steps=7))
    assert len(full) == 7 and all(len(b) == 3 for b in full)
    assert list(StepSampler(idx, 3, seed=0, total_steps=7, start_step=4)) == full[4:]
    r0 = list(StepSampler(idx, 3, 0, 6, rank=0, world=2))
    r1 = list(StepSampler(idx, 3, 0, 6, rank=1, world=2))
    for a, b in zip(r0[:3], r1[:3]):  # one epoch: disjoint shards
        assert not {i for i, _ in a} & {i for i, _ in b}
    with pytest.raises(ValueError, match="lower --batch-size"):
        StepSampler(np.arange(4), 8, 0, 1)


def test_length_grouped_sampler_pads_less_and_still_covers_the_epoch_once():
    rng = np.random.default_rng(0)
    idx = np.arange(10, 410)  # a subset of the corpus: lengths are looked up by study index
    lengths = rng.integers(5, 200, size=500)
    plain = StepSampler(idx, 8, seed=3, total_steps=50)
    grouped = StepSampler(idx, 8, seed=3, total_steps=50, lengths=lengths, group=10)

    def padded(sampler):  # tokens a batch pads to (its longest row) summed over the epoch
        return sum(8 * max(lengths[i] for i, _ in b) for b in sampler)

    epoch = [i for b in grouped for i, _ in b]
    assert sorted(epoch) == sorted(i for b in plain for i, _ in b) and len(set(epoch)) == 400  # each study once
    assert padded(grouped) < 0.75 * padded(plain)
    batches = list(grouped)  # grouped, yet not in length order: the batches of an epoch are shuffled
    maxima = [max(lengths[i] for i, _ in b) for b in batches]
    assert maxima != sorted(maxima, reverse=True) and maxima != sorted(maxima)
    assert list(StepSampler(idx, 8, 3, 50, start_step=20, lengths=lengths, group=10)) == batches[20:]  # resume
    r0 = list(StepSampler(idx, 4, 3, 50, rank=0, world=2, lengths=lengths, group=10))
    r1 = list(StepSampler(idx, 4, 3, 50, rank=1, world=2, lengths=lengths, group=10))
    assert [a + b for a, b in zip(r0, r1)] == batches  # ranks split the same global batches
