"""Configuration dataclasses for QFT pre-training.

One JSON file per model size lives in ``model/configs`` (``tiny`` for CPU tests, ``base`` = the paper's
shapes). A config file has three sections, ``model``, ``data`` and ``train``, each mapping onto the
dataclass of the same name; unknown keys are an error, missing keys take the defaults below.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class ModelConfig:
    # --- image encoder: a transformers vision backbone -------------------------------------------
    vision_backbone: str | None = None  # hub name or local dir for from_pretrained; None: build from vision_config
    vision_config: dict = field(default_factory=lambda: {  # transformers config kwargs; model_type picks the class
        "model_type": "vit", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "patch_size": 16})
    image_size: int = 224  # square training resolution (cache and encoder)
    image_channels: int = 3  # grey X-rays are repeated to this many channels (3 for ImageNet backbones)
    image_mean: float = 0.5  # pixel normalisation after scaling to [0, 1]
    image_std: float = 0.5
    image_pooling: str = "cls"  # global vector of [CLS]-first backbones (ViT...): cls | mean of patch tokens;
    # backbones with a pooler (ResNet, ConvNeXt, Swin) always use it, others the token mean
    # --- report encoder: BERT-style ---------------------------------------------------------------
    text_backbone: str | None = None  # hub name or local dir (e.g. a clinical BERT); None: build from text_config
    text_config: dict = field(default_factory=lambda: {
        "model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "max_position_embeddings": 512})
    text_pooling: str = "cls"  # report vector: cls | mean (masked mean; escapes the near-identical [CLS] of an untrained BERT)
    # --- query transformer (QFT) -------------------------------------------------------------------
    num_queries: int = 32  # learned query embeddings -> quasi-textual tokens
    qft_layers: int = 3  # each: bidirectional self-attention, cross-attention to patches, MLP
    qft_hidden: int = 768
    qft_heads: int = 12
    qft_mlp_ratio: float = 4.0
    dropout: float = 0.1  # QFT dropout (the backbones keep their own config's dropout)
    # --- decoder: GPT-2-style LM with cross-attention to both views' QFT tokens --------------------
    decoder_backbone: str | None = None  # hub name or local dir of a GPT-2 (must share the tokenizer's vocab)
    decoder_config: dict = field(default_factory=lambda: {
        "model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 256})
    # --- losses --------------------------------------------------------------------------------------
    embed_dim: int = 128  # shared contrastive embedding width
    temperature: float = 0.07  # fixed contrastive temperature (paper)
    queue_size: int = 2048  # MoCo-style queue length; any batch size works (wrap-around)
    momentum: float = 0.995  # EMA rate of the momentum encoders (MoCo / ALBEF) that produce the contrastive keys:
    # the batch's candidates and the queued negatives. 0: no momentum encoder, online features are queued (only
    # safe with a short queue: stale features of a fast-moving encoder make 'fresh vs queued' a shortcut that
    # collapses every embedding to one point)
    queue_warmup_steps: int = 0  # queues fill from step 0 but serve as negatives only after this many steps
    lm_weights: tuple = (9.0, 3.0, 1.0)  # coarse / middle / fine LM loss weights
    negatives: str = "report"  # which other rows are not contrastive negatives: "report" = those with the
    # identical report text (the paper); "labels" = also those whose report has the same positive CheXpert
    # label set (labels.parquet; rows without labels fall back to "report"). Small corpora where many
    # studies share their findings in different words (the phantom: a third are normal) otherwise push
    # apart images the report cannot tell apart.
    attn_implementation: str = "sdpa"  # for transformers backbones: sdpa | eager | flash_attention_2

    def __post_init__(self):  # fail at load, not after the image cache is built
        if self.negatives not in ("report", "labels"):
            raise ValueError(f"model.negatives must be 'report' or 'labels', not {self.negatives!r}")


@dataclass
class DataConfig:
    report_tokens: int = 200  # max report tokens (findings + impression) for the report encoder
    coarse_tokens: int = 200  # max decoder tokens per QA granularity (question + answer + specials)
    middle_tokens: int = 100
    fine_tokens: int = 50
    vocab_size: int = 30522  # size of a tokenizer trained on the corpus (ignored for a given tokenizer)
    tokenizer: str | None = None  # hub name or local dir; None: train a WordPiece tokenizer on the corpus
    augment_scale: tuple = (0.7, 1.0)  # random-resized-crop area range (two views from one image)
    augment_rotate: float = 10.0  # max rotation in degrees
    augment_jitter: float = 0.2  # max relative brightness / contrast change
    workers: int = 2  # DataLoader workers (0: in the main process)
    # > 1: batches come from pools of this many global batches sorted by report length (much less padding,
    # but a batch's reports, hence its in-batch negatives, have similar lengths); 0: plain shuffle (the paper)
    group_by_length: int = 0


@dataclass
class TrainConfig:
    batch_size: int = 128  # per process; global batch = batch_size * world size
    steps: int = 50000  # optimiser steps
    lr: float = 1e-4  # peak learning rate
    min_lr: float = 1e-6  # floor of the cosine decay
    warmup_steps: int = 1000
    weight_decay: float = 0.05  # on matrices only (not biases / norms / embeddings of size 1-D)
    betas: tuple = (0.9, 0.98)
    grad_clip: float = 1.0  # max global gradient norm (0: off)
    precision: str = "bf16"  # bf16 (autocast on GPU; CPU runs fp32) | fp32
    compile: bool = False  # torch.compile the training step (model + losses)
    compile_scope: str = "model"  # model: one graph for the whole forward (most fusion, longest compile) |
    # blocks: each repeated transformer block compiled once and reused (qft.compile_blocks; compiles much faster)
    grad_checkpointing: bool = False  # recompute each transformer block's activations in backward: about a third
    # more compute for a fraction of the activation memory (large batches on a small GPU; qft.set_grad_checkpointing)
    seed: int = 1337
    log_every: int = 20  # steps between log lines / CSV rows
    eval_every: int = 1000  # steps between retrieval evaluations (0: only at the end)
    eval_studies: int = 100  # held-out studies per retrieval evaluation (chance = 1 / this)
    save_every: int = 1000  # steps between checkpoints (always one at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept: OUT/checkpoint, OUT/checkpoint.1, ...; --resume falls back to
    # an older one when the newest is damaged (each costs the weights + AdamW state on disk, ~3x the parameters)
    peak_tflops: float | None = None  # device bf16 peak for MFU; None: guessed from the device name

    def __post_init__(self):
        if self.compile_scope not in ("model", "blocks"):
            raise ValueError(f"train.compile_scope must be 'model' or 'blocks', not {self.compile_scope!r}")
        if not isinstance(self.keep_checkpoints, int) or self.keep_checkpoints < 1:
            raise ValueError(f"train.keep_checkpoints must be an integer >= 1, not {self.keep_checkpoints!r}")


@dataclass
class QFTConfig:
    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> "QFTConfig":
        unknown = set(d) - {"name", "model", "data", "train"}
        if unknown:
            raise ValueError(f"config: unknown section(s) {sorted(unknown)}")
        return cls(name=d.get("name", "custom"), model=_build(ModelConfig, d.get("model", {})),
                   data=_build(DataConfig, d.get("data", {})), train=_build(TrainConfig, d.get("train", {})))


def _build(klass, d: dict):
    names = {f.name: f for f in dataclasses.fields(klass)}
    unknown = set(d) - set(names)
    if unknown:
        raise ValueError(f"config: unknown {klass.__name__} key(s) {sorted(unknown)}")
    # JSON has lists where the dataclass has tuples
    kw = {k: tuple(v) if isinstance(v, list) and names[k].type == "tuple" else v for k, v in d.items()}
    return klass(**kw)


def load_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> QFTConfig:
    """Load ``tiny`` / ``base`` (bundled) or a JSON / YAML file; ``overrides`` maps 'section.key' -> value."""
    p = Path(name_or_path)
    if not p.exists():
        p = CONFIG_DIR / f"{name_or_path}.json"
        if not p.exists():
            known = sorted(x.stem for x in CONFIG_DIR.glob("*.json"))
            raise FileNotFoundError(f"config {name_or_path!r}: no such file and not one of {known}")
    if p.suffix in (".yaml", ".yml"):
        import yaml
        d = yaml.safe_load(p.read_text())
    else:
        d = json.loads(p.read_text())
    d.setdefault("name", p.stem)
    for key, value in (overrides or {}).items():
        section, _, k = key.partition(".")
        if not k or section not in ("model", "data", "train"):
            raise ValueError(f"override {key!r}: expected section.key with section model|data|train")
        d.setdefault(section, {})[k] = value
    return QFTConfig.from_dict(d)
