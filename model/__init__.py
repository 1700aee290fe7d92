"""QFT pre-training and fine-tuning on the QA Parquet tables (see README "Output schema"); never imports qa_builder.

    from model import QFT, load_config, load_pretrained, pretrain
Names load lazily so ``import model`` stays cheap (no torch / transformers until used).
"""
__all__ = ["QFT", "QFTConfig", "load_config", "load_pretrained", "pretrain"]


def __getattr__(name):
    if name == "QFT":
        from .qft import QFT
        return QFT
    if name in ("QFTConfig", "load_config"):
        from . import config
        return getattr(config, name)
    if name == "load_pretrained":
        from .checkpoint import load_pretrained
        return load_pretrained
    if name == "pretrain":
        from .train import pretrain
        return pretrain
    raise AttributeError(f"module 'model' has no attribute {name!r}")
