"""One tokenizer for the report encoder and the decoder.

Either loaded from a local dir / hub name (a transformers fast tokenizer, e.g. a clinical BERT's), or a
BERT-style WordPiece tokenizer trained on the corpus's own text with ``tokenizers`` (the offline default).
Saved beside each checkpoint as ``tokenizer/``.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"]


class TextTokenizer:
    """Thin wrapper over a ``tokenizers.Tokenizer``: ids without specials + the special ids QFT needs."""

    def __init__(self, tok: Tokenizer, pad: int, cls: int, sep: int, bos: int, eos: int):
        self.tok = tok
        self.tok.no_padding()
        self.tok.no_truncation()
        self.pad_id, self.cls_id, self.sep_id, self.bos_id, self.eos_id = pad, cls, sep, bos, eos

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        specials = (self.pad_id, self.bos_id, self.eos_id, self.cls_id, self.sep_id)
        return self.tok.decode([i for i in ids if i not in specials], skip_special_tokens=True)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(folder / "tokenizer.json"))
        ids = {"pad": self.pad_id, "cls": self.cls_id, "sep": self.sep_id, "bos": self.bos_id, "eos": self.eos_id}
        (folder / "qft_special_tokens.json").write_text(json.dumps(ids) + "\n")

    @classmethod
    def load(cls, name_or_path: str | Path) -> "TextTokenizer":
        """A folder saved by ``save``, or anything ``AutoTokenizer.from_pretrained`` reads (dir or hub name)."""
        p = Path(name_or_path)
        if (p / "qft_special_tokens.json").exists():
            ids = json.loads((p / "qft_special_tokens.json").read_text())
            return cls(Tokenizer.from_file(str(p / "tokenizer.json")), **ids)
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(name_or_path))
        backend = getattr(hf, "backend_tokenizer", None) or getattr(hf, "_tokenizer", None)
        if backend is None:
            raise ValueError(f"{name_or_path}: QFT needs a fast (tokenizers-backed) tokenizer")
        pick = lambda *names: next((i for i in (getattr(hf, n, None) for n in names) if i is not None), None)
        pad = pick("pad_token_id", "eos_token_id", "unk_token_id")
        bos = pick("bos_token_id", "cls_token_id")
        eos = pick("eos_token_id", "sep_token_id")
        cls_ = pick("cls_token_id", "bos_token_id")
        sep = pick("sep_token_id", "eos_token_id")
        if None in (pad, bos, eos, cls_, sep):
            raise ValueError(f"{name_or_path}: tokenizer lacks pad/bos/eos (or cls/sep) tokens")
        return cls(Tokenizer.from_str(backend.to_str()), pad, cls_, sep, bos, eos)


def train_wordpiece(texts: Iterable[str], vocab_size: int) -> TextTokenizer:
    """A lower-cased BERT-style WordPiece tokenizer learnt from ``texts``, deterministically.

    Vocabulary: the specials, every character seen (as a word start and as a '##' continuation), then the
    most frequent whole words (ties by spelling) up to ``vocab_size``; rarer words split into characters.
    (The ``tokenizers`` WordPiece trainer breaks merge ties in hash order, so its ids change run to run,
    which would break exact resume and reproducibility; radiology vocabulary is small enough for this.)
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = list(SPECIALS) + chars + [f"##{c}" for c in chars]
    room = max(0, vocab_size - len(vocab))
    have = set(vocab)
    ranked = sorted((w for w in words if w not in have and len(w) > 1), key=lambda w: (-words[w], w))
    vocab += ranked[:room]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                     max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    ids = {name: tok.token_to_id(t) for name, t in
           (("pad", "[PAD]"), ("cls", "[CLS]"), ("sep", "[SEP]"), ("bos", "[BOS]"), ("eos", "[EOS]"))}
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", ids["cls"]), ("[SEP]", ids["sep"])])
    return TextTokenizer(tok, **ids)
