"""Same seed -> identical bytes, whatever the worker count; different seed -> different corpus."""
from __future__ import annotations

from pipelines.phantom.testing import corpus, read_truth, tree_digest


def test_same_seed_gives_identical_bytes_across_worker_counts():
    serial = tree_digest(corpus(n=24, workers=1, tag="-det"))
    parallel = tree_digest(corpus(n=24, workers=2, tag="-det"))
    assert serial.keys() == parallel.keys()
    differing = [k for k in serial if serial[k] != parallel[k]]
    assert not differing, differing[:5]
    assert any(k.endswith(".png") for k in serial) and "boxes_coco.json" in serial


def test_different_seed_gives_different_corpus():
    a = read_truth(corpus(n=24, workers=1, tag="-det"))
    b = read_truth(corpus(n=24, seed=1))
    assert {r["study_id"] for r in a}.isdisjoint({r["study_id"] for r in b})
    assert [r["findings"] for r in a] != [r["findings"] for r in b]


def test_smaller_n_is_a_prefix_of_larger_n():
    small, large = corpus(n=10, tag="-prefix"), corpus(n=24, workers=1, tag="-det")
    small_truth, large_truth = read_truth(small), read_truth(large)
    assert small_truth == large_truth[:10]
    small_files, large_files = tree_digest(small), tree_digest(large)
    for path, digest in small_files.items():
        if path.startswith(("files/", "masks/")):
            assert large_files.get(path) == digest, path


def _png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        chunks.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return chunks


def test_png_files_carry_no_metadata_chunks():
    out = corpus(n=24, workers=1, tag="-det")
    for png in list((out / "files").rglob("*.png"))[:10] + list((out / "masks").rglob("*.png"))[:10]:
        chunks = set(_png_chunks(png.read_bytes()))
        assert chunks <= {b"IHDR", b"IDAT", b"IEND"}, (png, chunks)
