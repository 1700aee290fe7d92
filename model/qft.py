"""The QFT model (Su et al., MICCAI 2024, "Design as Desired"), read top to bottom.

    image views (B, S, S) uint8 --augment/normalise--> (2B, C, S, S)
      -> ImageEncoder (any transformers vision backbone)  -> global (2B, Dv), patch tokens (2B, N, Dv)
      -> QueryTransformer: Q learned queries, self-attention (bidirectional) + cross-attention to the
         projected patch tokens                             -> quasi-textual tokens (2B, 1+Q, H)
    report (B, Lr) -> TextEncoder (BERT-style)              -> [CLS] (B, Dt)
    QA prompt + answer (B, Lg) -> GPT-2 decoder with cross-attention to both views' QFT tokens (B, 2(1+Q), Hd)

Losses (``losses.py``): image-report contrastive on the mean of the two views' global embeddings,
query-report contrastive (max over queries), LM loss on one coarse / middle / fine QA pair (9 / 3 / 1).
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .losses import (FeatureQueue, QFTLoss, gather_rows, image_report_contrastive, lm_loss, query_report_contrastive,
                     target_positions)

log = logging.getLogger("qft")

# backbones whose last_hidden_state starts with a [CLS] token (global = token 0, patches follow; see special_tokens)
CLS_FIRST = {"vit", "deit", "beit", "data2vec-vision", "dinov2", "dinov2_with_registers", "vit_msn", "vit_mae",
             "clip_vision_model", "yolos"}
GRANULARITIES = ("coarse", "middle", "fine")
# the modules that produce contrastive features; the momentum encoder is an EMA copy of exactly these
CONTRASTIVE_MODULES = ("image_encoder", "qft", "text_encoder", "image_global", "report_global", "report_query",
                       "query_embed")


# ----------------------------------------------------------------------------------------------------
# backbones from transformers: by hub name / local dir, or built from a config dict (offline)


def _from_config_dict(d: dict):
    from transformers import AutoConfig

    d = dict(d)
    model_type = d.pop("model_type")
    return AutoConfig.for_model(model_type, **d)


def build_backbone(name_or_path: str | None, config: dict, attn: str, overrides: dict, **model_kwargs):
    from transformers import AutoModel

    def make(**attn_kw):
        if name_or_path:
            return AutoModel.from_pretrained(name_or_path, **attn_kw, **model_kwargs)
        return AutoModel.from_config(_from_config_dict({**config, **overrides}), **attn_kw, **model_kwargs)

    try:
        return make(attn_implementation=attn)
    except ValueError as e:  # models without attention (ResNet, ConvNeXt) reject an attention implementation
        if "attention implementation" not in str(e):
            raise
        return make()


def special_tokens(config) -> tuple[int, int]:
    """(leading, trailing) non-patch tokens of a [CLS]-first backbone's output: DeiT's distillation token and
    DINOv2's registers follow [CLS], YOLOS appends detection tokens. Patch tokens are the rest, in grid order."""
    lead = 1 + (config.model_type == "deit") + getattr(config, "num_register_tokens", 0)
    trail = getattr(config, "num_detection_tokens", 0) if config.model_type == "yolos" else 0
    return lead, trail


class ImageEncoder(nn.Module):
    """Any transformers vision backbone -> (global vector (B, D), patch tokens (B, N, D) in grid order)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        size = cfg.image_size
        if cfg.vision_config.get("model_type") == "yolos":  # its config wants (height, width)
            size = [size, size]
        over = {"image_size": size, "num_channels": cfg.image_channels}
        try:
            self.backbone = build_backbone(cfg.vision_backbone, cfg.vision_config, cfg.attn_implementation, over,
                                           add_pooling_layer=False)
        except TypeError:  # backbones without that argument (ResNet, ConvNeXt, ...)
            self.backbone = build_backbone(cfg.vision_backbone, cfg.vision_config, cfg.attn_implementation, over)
        c = self.backbone.config
        self.width = getattr(c, "hidden_size", None) or c.hidden_sizes[-1]
        self.cls_first = c.model_type in CLS_FIRST
        self.special = special_tokens(c)
        self.channels = getattr(c, "num_channels", cfg.image_channels)
        self.pooling = cfg.image_pooling
        # ViT-MAE drops a random 75 % of the patches and shuffles the rest in its forward: keep all, in order
        self.unmasked = c.model_type == "vit_mae"
        if self.unmasked:
            c.mask_ratio = 0.0

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kw = {}
        if self.unmasked:  # increasing noise: the identity permutation (mask_ratio is 0)
            n = (self.backbone.config.image_size // self.backbone.config.patch_size) ** 2
            kw["noise"] = torch.arange(n, device=pixels.device, dtype=torch.float).expand(pixels.shape[0], n)
        out = self.backbone(pixel_values=pixels, **kw)
        h = out.last_hidden_state
        if h.ndim == 4:  # conv nets: (B, C, h, w) -> tokens (B, h*w, C)
            h = h.flatten(2).transpose(1, 2)
        pooled = getattr(out, "pooler_output", None)
        if self.cls_first:
            lead, trail = self.special
            h, cls = h[:, lead:h.shape[1] - trail], h[:, 0]
            return (cls if self.pooling == "cls" else h.mean(1)), h
        if pooled is not None:  # always used when the backbone has one (unused parameters would break DDP)
            return pooled.flatten(1), h
        return h.mean(1), h


class TextEncoder(nn.Module):
    """BERT-style report encoder -> [CLS] (B, D)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, pad_id: int):
        super().__init__()
        # a config that names its own (larger) vocabulary keeps it: checkpoints of pretrained backbones
        over = {"vocab_size": max(vocab_size, cfg.text_config.get("vocab_size", 0)), "pad_token_id": pad_id}
        try:
            self.backbone = build_backbone(cfg.text_backbone, cfg.text_config, cfg.attn_implementation, over,
                                           add_pooling_layer=False)
        except TypeError:
            self.backbone = build_backbone(cfg.text_backbone, cfg.text_config, cfg.attn_implementation, over)
        if self.backbone.get_input_embeddings().num_embeddings < vocab_size:
            self.backbone.resize_token_embeddings(vocab_size)
        self.width = self.backbone.config.hidden_size
        self.pooling = cfg.text_pooling

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
        if self.pooling == "cls":
            return h[:, 0]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)


# ----------------------------------------------------------------------------------------------------
# query transformer


class Attention(nn.Module):
    """Multi-head attention through F.scaled_dot_product_attention (flash / memory-efficient kernels)."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        assert dim % heads == 0, "qft_hidden must be divisible by qft_heads"
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        context = x if context is None else context
        S = context.shape[1]
        q = self.q(x).view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, h, T, d)
        k, v = self.kv(context).view(B, S, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, S, d)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class QFTLayer(nn.Module):
    """BERT-style post-LN block: queries attend to each other (no causal mask), then to the image."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.self_attn, self.ln1 = Attention(dim, heads, dropout=dropout), nn.LayerNorm(dim, eps=1e-12)
        self.cross_attn, self.ln2 = Attention(dim, heads, dropout=dropout), nn.LayerNorm(dim, eps=1e-12)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.ln3 = nn.LayerNorm(dim, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.drop(self.self_attn(x)))
        x = self.ln2(x + self.drop(self.cross_attn(x, image)))
        return self.ln3(x + self.drop(self.mlp(x)))


class QueryTransformer(nn.Module):
    """N learned queries read the patch tokens -> quasi-textual tokens, prefixed by their mean (1 + N)."""

    def __init__(self, cfg: ModelConfig, image_width: int):
        super().__init__()
        H = cfg.qft_hidden
        self.queries = nn.Parameter(torch.randn(1, cfg.num_queries, H) * 0.02)  # (1, Q, H)
        self.in_ln = nn.LayerNorm(H, eps=1e-12)
        self.image_proj = nn.Sequential(nn.Linear(image_width, H), nn.LayerNorm(H, eps=1e-12))
        self.layers = nn.ModuleList(QFTLayer(H, cfg.qft_heads, cfg.qft_mlp_ratio, cfg.dropout)
                                    for _ in range(cfg.qft_layers))
        self.grad_checkpointing = False  # set_grad_checkpointing: recompute each layer in backward

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        image = self.image_proj(patches)  # (B, N, H)
        # contiguous: layer inputs keep one memory layout (a compiled QFTLayer would recompile for stride 0)
        x = self.in_ln(self.queries).expand(patches.shape[0], -1, -1).contiguous()  # (B, Q, H)
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            x = checkpoint(layer, x, image, use_reentrant=False) if recompute else layer(x, image)
        return torch.cat([x.mean(1, keepdim=True), x], 1)  # (B, 1 + Q, H)


# ----------------------------------------------------------------------------------------------------
# decoder


def build_decoder(cfg: ModelConfig, vocab_size: int, pad_id: int, bos_id: int, eos_id: int):
    from transformers import GPT2LMHeadModel

    # pad_token_id stays unset: right padding under a causal mask needs no attention mask, and
    # generate() is given pad_token_id explicitly
    ids = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": None}
    if cfg.decoder_backbone:
        dec = GPT2LMHeadModel.from_pretrained(cfg.decoder_backbone, add_cross_attention=True,
                                              attn_implementation=cfg.attn_implementation, **ids)
        if dec.config.vocab_size != vocab_size:
            dec.resize_token_embeddings(vocab_size)
        return dec
    vocab_size = max(vocab_size, cfg.decoder_config.get("vocab_size", 0))
    c = _from_config_dict({**cfg.decoder_config, "add_cross_attention": True, "vocab_size": vocab_size, **ids})
    return GPT2LMHeadModel._from_config(c, attn_implementation=cfg.attn_implementation)


# ----------------------------------------------------------------------------------------------------
# the model


@dataclass
class ImageFeatures:
    embedding: torch.Tensor  # (B, E) normalised mean of the views' global embeddings (retrieval)
    global_features: torch.Tensor  # (V, B, Dv) backbone global vectors per view
    patch_tokens: torch.Tensor  # (V, B, N, Dv)
    query_tokens: torch.Tensor  # (V, B, 1 + Q, H) QFT output per view
    decoder_context: torch.Tensor  # (B, V * (1 + Q), Hd) what the decoder cross-attends to


class QFT(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, pad_id: int, bos_id: int, eos_id: int):
        super().__init__()
        self.cfg = cfg
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.image_encoder = ImageEncoder(cfg)
        self.text_encoder = TextEncoder(cfg, vocab_size, pad_id)
        self.qft = QueryTransformer(cfg, self.image_encoder.width)
        self.decoder = build_decoder(cfg, vocab_size, pad_id, bos_id, eos_id)
        E, Dv, Dt, H = cfg.embed_dim, self.image_encoder.width, self.text_encoder.width, cfg.qft_hidden
        Hd = self.decoder.config.n_embd
        self.image_global = nn.Linear(Dv, E)  # global image vector -> contrastive space
        self.report_global = nn.Linear(Dt, E)  # report [CLS] -> image-report space
        self.report_query = nn.Linear(Dt, E)  # report [CLS] -> query-report space
        self.query_embed = nn.Linear(H, E)  # QFT tokens -> query-report space
        self.query_to_decoder = nn.Sequential(nn.Linear(H, Hd), nn.LayerNorm(Hd))
        K, Q = cfg.queue_size, cfg.num_queries + 1
        self.image_queue, self.report_queue = FeatureQueue(K, E), FeatureQueue(K, E)
        self.report_query_queue = FeatureQueue(K, E)
        self.query_queues = nn.ModuleList([FeatureQueue(K, Q, E), FeatureQueue(K, Q, E)])  # one per view
        self.use_queue = True  # the trainer turns queue negatives off for the first queue_warmup_steps
        # MoCo / ALBEF momentum encoder: an EMA copy of the contrastive modules (no gradient, not optimised)
        # encodes the keys (the batch's candidates and what is queued), so queued negatives stay consistent
        # with the positives instead of being features of an older, different encoder
        self.momentum_encoder = None
        if cfg.momentum > 0 and K > 0:
            self.momentum_encoder = nn.ModuleDict({n: copy.deepcopy(getattr(self, n)) for n in CONTRASTIVE_MODULES})
            self.momentum_encoder.requires_grad_(False)
        self.register_buffer("pixel_stats", torch.tensor([cfg.image_mean, cfg.image_std]), persistent=False)

    # ---- inputs ------------------------------------------------------------------------------------
    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S) / (B, 1, S, S), or float in [0, 1] -> normalised float (B, C, S, S)."""
        x = pixels.float().div(255.0) if pixels.dtype == torch.uint8 else pixels.float()
        if x.ndim == 3:
            x = x.unsqueeze(1)
        x = (x - self.pixel_stats[0]) / self.pixel_stats[1]
        return x.expand(-1, self.image_encoder.channels, -1, -1)

    # ---- downstream API ----------------------------------------------------------------------------
    def encode_image(self, view0: torch.Tensor, view1: torch.Tensor | None = None) -> ImageFeatures:
        """One or two views per study (uint8 as in the cache, or float in [0, 1]); one view is used twice."""
        views = [self.normalise(view0), self.normalise(view1 if view1 is not None else view0)]
        B = views[0].shape[0]
        g, patches = self.image_encoder(torch.cat(views))  # both views in one pass: (2B, Dv), (2B, N, Dv)
        q = self.qft(patches)  # (2B, 1 + Q, H)
        emb = F.normalize(self.image_global(g), dim=-1).view(2, B, -1)
        embedding = F.normalize(emb.mean(0), dim=-1)
        ctx = self.query_to_decoder(q).view(2, B, q.shape[1], -1)
        ctx = torch.cat([ctx[0], ctx[1]], 1)  # (B, 2(1 + Q), Hd)
        return ImageFeatures(embedding, g.view(2, B, -1), patches.view(2, B, *patches.shape[1:]),
                             q.view(2, B, *q.shape[1:]), ctx)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Report tokens ([CLS] ... [SEP]) -> (B, E) normalised embedding in the image-report space."""
        return F.normalize(self.report_global(self.text_encoder(ids, mask)), dim=-1)

    def decoder_logits(self, ids: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None):
        # right-padded sequences under a causal mask never attend to their padding: no mask needed
        return self.decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=context,
                            use_cache=False).logits

    def answer_logits(self, ids: torch.Tensor, context: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(N, V) decoder logits at the flat positions (into B * L) that predict a token: the vocabulary
        projection and its cross-entropy skip the prompt and the padding (most of a batch's positions)."""
        h = self.decoder.transformer(input_ids=ids, encoder_hidden_states=context, use_cache=False).last_hidden_state
        return self.decoder.lm_head(h.flatten(0, 1).index_select(0, positions))  # (B, L, Hd) -> (N, V)

    @torch.no_grad()
    def generate(self, view0: torch.Tensor, prompts: torch.Tensor, view1: torch.Tensor | None = None,
                 max_new_tokens: int = 50) -> torch.Tensor:
        """Greedy answers. prompts: (B, L) left-padded [BOS] question [SEP] ids; returns (B, <= max_new_tokens)."""
        ctx = self.encode_image(view0, view1).decoder_context
        mask = (prompts != self.pad_id).long()
        mask[:, -1] = 1
        out = self.decoder.generate(input_ids=prompts, attention_mask=mask, encoder_hidden_states=ctx,
                                    max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.pad_id,
                                    eos_token_id=self.eos_id, bos_token_id=self.bos_id)
        return out[:, prompts.shape[1]:]

    # ---- momentum encoder ----------------------------------------------------------------------------
    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA step: momentum <- m * momentum + (1 - m) * online."""
        ema, online = [], []
        for n in CONTRASTIVE_MODULES:
            ema += list(self.momentum_encoder[n].parameters())
            online += list(getattr(self, n).parameters())
        torch._foreach_lerp_(ema, online, 1.0 - self.cfg.momentum)

    @torch.no_grad()
    def momentum_features(self, pixels0: torch.Tensor, pixels1: torch.Tensor, ids: torch.Tensor,
                          mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embedding (B, E), report embedding (B, E), report query-space embedding (B, E),
        queries (2, B, 1 + Q, E)) from the momentum encoder, computed exactly as the online ones."""
        m = self.momentum_encoder
        B = pixels0.shape[0]
        g, patches = m.image_encoder(torch.cat([self.normalise(pixels0), self.normalise(pixels1)]))
        q = m.qft(patches)
        img = F.normalize(F.normalize(m.image_global(g), dim=-1).view(2, B, -1).mean(0), dim=-1)
        queries = F.normalize(m.query_embed(q), dim=-1).view(2, B, *q.shape[1:-1], -1)
        cls = m.text_encoder(ids, mask)
        return img, F.normalize(m.report_global(cls), dim=-1), F.normalize(m.report_query(cls), dim=-1), queries

    # ---- pre-training ------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> QFTLoss:
        """batch: pixels0/pixels1 (B, C, S, S) float (augmented), report/report_mask (B, Lr), report_key (B,)
        int64 hash of the report text (rows with equal keys are not each other's negatives), and per
        granularity g: g (B, Lg) inputs, g_targets (B, Lg) shifted targets (IGNORE outside answers) and optionally
        g_positions (N,) their flat non-IGNORE indices (computed here when absent)."""
        cfg, T = self.cfg, self.cfg.temperature
        img = self.encode_image(batch["pixels0"], batch["pixels1"])
        cls = self.text_encoder(batch["report"], batch["report_mask"])  # (B, Dt)
        report_emb = F.normalize(self.report_global(cls), dim=-1)  # (B, E)
        report_q = F.normalize(self.report_query(cls), dim=-1)  # (B, E)
        queries = F.normalize(self.query_embed(img.query_tokens), dim=-1)  # (2, B, 1 + Q, E)

        keys = batch["report_key"]  # (B,) hash of the report tokens: same text -> not a negative
        all_keys = gather_rows(keys)
        # contrastive keys: momentum features when there is a momentum encoder (training), else the online ones
        k_img, k_rep, k_rq, k_q = img.embedding, report_emb, report_q, queries
        momentum = self.momentum_encoder is not None and self.training
        if momentum:
            self.momentum_update()
            k_img, k_rep, k_rq, k_q = self.momentum_features(batch["pixels0"], batch["pixels1"], batch["report"],
                                                             batch["report_mask"])
        itc = image_report_contrastive(img.embedding, report_emb, keys, all_keys, self.image_queue,
                                       self.report_queue, T, self.use_queue,
                                       img_m=k_img if momentum else None, txt_m=k_rep if momentum else None)
        qrc = query_report_contrastive(queries, report_q, keys, all_keys, list(self.query_queues),
                                       self.report_query_queue, T, self.use_queue,
                                       queries_m=k_q if momentum else None, txt_m=k_rq if momentum else None)
        lm = []
        for g in GRANULARITIES:
            targets = batch[g + "_targets"]
            pos = batch[g + "_positions"] if g + "_positions" in batch else target_positions(targets)
            lm.append(lm_loss(self.answer_logits(batch[g], img.decoder_context, pos), targets.flatten()[pos]))
        total = itc + qrc + sum(w * x for w, x in zip(cfg.lm_weights, lm))

        if self.training:  # enqueue this step's (gathered) keys for the next steps' negatives
            self.image_queue.push(gather_rows(k_img.detach()), all_keys)
            self.report_queue.push(gather_rows(k_rep.detach()), all_keys)
            self.report_query_queue.push(gather_rows(k_rq.detach()), all_keys)
            for v in range(2):
                self.query_queues[v].push(gather_rows(k_q[v].detach()), all_keys)
        return QFTLoss(total, itc, qrc, *lm)


def set_grad_checkpointing(model: QFT, enable: bool = True) -> None:
    """Activation checkpointing of every trainable transformer stack (ViT / BERT / GPT-2 layers through
    transformers' own switch, the QFT layers through torch.utils.checkpoint, non-reentrant): their activations
    are recomputed in backward instead of kept. The momentum copies run without grad and keep nothing anyway."""
    for name, backbone in (("image", model.image_encoder.backbone), ("report", model.text_encoder.backbone),
                           ("decoder", model.decoder)):
        if not getattr(backbone, "supports_gradient_checkpointing", False):
            if enable:
                log.warning("train.grad_checkpointing: the %s backbone (%s) does not support it; its activations "
                            "are kept", name, type(backbone).__name__)
            continue
        # newer transformers call it activation checkpointing (the old name warns); older ones know only the old name
        prefix = "activation" if hasattr(backbone, "activation_checkpointing_enable") else "gradient"
        if enable:
            getattr(backbone, f"{prefix}_checkpointing_enable")({"use_reentrant": False})
        else:
            getattr(backbone, f"{prefix}_checkpointing_disable")()
    if enable:
        model.text_encoder.backbone.config.use_cache = False  # an encoder caches nothing (transformers would warn)
    model.qft.grad_checkpointing = enable


def compile_blocks(model: nn.Module, **compile_kwargs) -> int:
    """Regional compilation: compile every repeated block (each entry of an nn.ModuleList with its own forward:
    ViT / BERT / GPT-2 layers, QFT layers, their momentum copies) in place. Blocks of one class share the
    compiled code, so this compiles a handful of graphs instead of one graph of the whole step, at the cost of
    fusion across block boundaries. Parameter names are unchanged (checkpoints load either way).
    Returns the number of blocks compiled.

    The HF layers of ViT, BERT and GPT-2 share one compiled entry point (transformers' checkpointing wrapper),
    and each is compiled with and without grad (momentum copies) and again for dynamic sequence lengths, which
    exceeds dynamo's default of 8 graphs per function (beyond it, blocks silently run eagerly): raised to 64."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    n = 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            for block in module:
                if type(block).forward is not nn.Module.forward:
                    block.compile(**compile_kwargs)
                    n += 1
    return n


def param_count(model: nn.Module) -> int:
    """Trainable parameters (the momentum encoder's EMA copies are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def cosine_lr(step: int, peak: float, floor: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak`` then cosine decay to ``floor`` at ``total`` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))
