"""The QFT model: shapes, finite + decreasing losses on an overfit batch, other backbones, local weights by path."""
import pytest
import torch

from model.augment import augment
from model.config import load_config
from model.losses import IGNORE
from model.qft import QFT
from model_shapes import micro

V, PAD, BOS, EOS = 120, 0, 5, 6


def tiny(**over):
    # the paper's contrastive set-up (momentum keys + queue), which the CPU demo config turns off
    return load_config("tiny", micro(64, **{"model.queue_size": 12, "model.momentum": 0.95,
                                            "model.queue_warmup_steps": 0, **over}))


def batch(B=8, S=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (B, S, S), dtype=torch.uint8, generator=g)
    b = {"pixels0": augment(img, g), "pixels1": augment(img, g),
         "report": torch.randint(7, V, (B, 20), generator=g), "report_mask": torch.ones(B, 20, dtype=torch.long),
         "report_key": torch.arange(B)}
    b["report_mask"][0, 15:] = 0
    for name, L in (("coarse", 16), ("middle", 10), ("fine", 6)):
        b[name] = torch.randint(7, V, (B, L), generator=g)
        t = torch.randint(7, V, (B, L), generator=g)
        t[:, :3] = IGNORE
        b[name + "_targets"] = t
    b["fine_targets"][:3] = IGNORE  # three studies without a fine pair
    return b


def test_forward_shapes_and_finite_terms():
    torch.manual_seed(0)
    cfg = tiny()
    m = QFT(cfg.model, V, PAD, BOS, EOS)
    out = m(batch())
    terms = out.items()
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values()), terms
    w = cfg.model.lm_weights
    expect = terms["itc"] + terms["qrc"] + w[0] * terms["lm_coarse"] + w[1] * terms["lm_middle"] + w[2] * terms["lm_fine"]
    assert abs(terms["loss"] - expect) < 1e-3
    assert m.image_queue.filled.item() == 8 and m.query_queues[1].feats.shape == (12, 5, cfg.model.embed_dim)
    f = m.encode_image(batch()["pixels0"])
    assert f.embedding.shape == (8, cfg.model.embed_dim) and f.query_tokens.shape == (2, 8, 5, 32)
    assert f.patch_tokens.shape == (2, 8, 16, 32) and f.decoder_context.shape == (8, 10, 32)
    assert torch.allclose(f.embedding.norm(dim=-1), torch.ones(8), atol=1e-5)


def test_lm_loss_on_target_positions_equals_the_full_logits_loss():
    """The vocabulary projection runs only where a token is predicted: same loss and gradients as projecting
    every position and ignoring the prompt / padding ones, with or without precomputed positions."""
    from model.losses import lm_loss, target_positions
    torch.manual_seed(0)
    m = QFT(tiny(**{"model.dropout": 0.0}).model, V, PAD, BOS, EOS).eval()
    b = batch()
    ctx = m.encode_image(b["pixels0"], b["pixels1"]).decoder_context.detach()
    ids, t = b["middle"], b["middle_targets"].clone()
    t[2, 5:] = IGNORE  # a shorter, right-padded row
    full = lm_loss(m.decoder_logits(ids, ctx), t)
    g_full = torch.autograd.grad(full, m.decoder.lm_head.weight)[0]
    pos = target_positions(t)
    assert pos.numel() == int((t != IGNORE).sum()) < t.numel()
    part = lm_loss(m.answer_logits(ids, ctx, pos), t.flatten()[pos])
    g_part = torch.autograd.grad(part, m.decoder.lm_head.weight)[0]
    assert torch.allclose(full, part, atol=1e-5) and torch.allclose(g_full, g_part, atol=1e-6)
    with_pos = {**b, **{g + "_positions": target_positions(b[g + "_targets"]) for g in ("coarse", "middle", "fine")}}
    assert torch.equal(m(b).loss, m(with_pos).loss)
    none = {**b, "fine_targets": torch.full_like(b["fine_targets"], IGNORE)}
    assert m(none).lm_fine.item() == 0.0  # no target token: 0, not NaN


def test_grad_checkpointing_gives_the_same_loss_and_gradients_and_keeps_fewer_activations():
    from model.qft import set_grad_checkpointing

    def run(checkpointing: bool):
        torch.manual_seed(0)
        m = QFT(tiny().model, V, PAD, BOS, EOS).train()
        if checkpointing:
            set_grad_checkpointing(m)
        saved = []  # bytes autograd keeps for backward outside the recomputed blocks
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            torch.manual_seed(1)  # the same dropout masks: checkpoint replays the RNG state when it recomputes
            loss = m(batch()).loss
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}, sum(saved)

    loss, grads, kept = run(False)
    loss_ck, grads_ck, kept_ck = run(True)
    assert torch.allclose(loss, loss_ck) and grads.keys() == grads_ck.keys()
    assert all(torch.allclose(grads[n], grads_ck[n], atol=1e-6) for n in grads)
    assert kept_ck < 0.6 * kept


def test_overfit_tiny_batch_all_terms_decrease():
    torch.manual_seed(0)
    m = QFT(tiny(**{"model.queue_size": 0}).model, V, PAD, BOS, EOS)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    b = batch()
    first = None
    for _ in range(40):
        out = m(b)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        first = first or out.items()
    last = m(b).items()
    for k in ("loss", "itc", "qrc", "lm_coarse", "lm_middle", "lm_fine"):
        assert last[k] < 0.8 * first[k], (k, first[k], last[k])


def test_convnet_backbone_and_generate():
    torch.manual_seed(0)
    cfg = tiny(**{"model.vision_config": {"model_type": "resnet", "embedding_size": 16, "hidden_sizes": [16, 32],
                                          "depths": [1, 1], "layer_type": "basic"}, "model.image_pooling": "cls"})
    m = QFT(cfg.model, V, PAD, BOS, EOS).eval()
    b = batch()
    f = m.encode_image(b["pixels0"], b["pixels1"])
    assert f.global_features.shape == (2, 8, 32) and f.patch_tokens.shape[-1] == 32
    prompts = torch.tensor([[PAD, BOS, 9, 10, 3], [BOS, 11, 12, 13, 3]])
    out = m.generate(b["pixels0"][:2], prompts, max_new_tokens=4)
    assert out.shape[0] == 2 and 1 <= out.shape[1] <= 4


VIT_LIKE = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
            "patch_size": 8}


@pytest.mark.parametrize("vision_config", [
    {"model_type": "swin", "embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2], "window_size": 4, "patch_size": 4},
    {"model_type": "convnext", "hidden_sizes": [16, 32], "depths": [1, 1], "num_stages": 2, "patch_size": 4},
    {"model_type": "deit", **VIT_LIKE},  # [CLS] + distillation token
    {"model_type": "dinov2_with_registers", **VIT_LIKE, "num_register_tokens": 4},
    {"model_type": "yolos", **VIT_LIKE, "num_detection_tokens": 5},  # detection tokens at the end
    {"model_type": "vit_mae", **VIT_LIKE},  # masks 75 % of patches at random unless told otherwise
], ids=lambda c: c["model_type"])
def test_other_backbones_give_the_patch_grid_only(vision_config):
    """32 px images -> a 4 x 4 grid of patch tokens, whatever special tokens the backbone adds, every call alike."""
    torch.manual_seed(0)
    m = QFT(tiny(**{"model.vision_config": vision_config}).model, V, PAD, BOS, EOS)
    b = batch()
    assert torch.isfinite(m(b).loss)
    m.eval()
    f = m.encode_image(b["pixels0"])
    assert f.patch_tokens.shape[:3] == (2, 8, 16) and f.global_features.shape[:2] == (2, 8)
    assert torch.equal(f.patch_tokens, m.encode_image(b["pixels0"]).patch_tokens)


def test_backbones_load_from_local_dirs(tmp_path):
    """A user's local ViT / BERT / GPT-2 (e.g. a clinical BERT) loads by path, no hub access."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, num_channels=3)).save_pretrained(tmp_path / "vit")
    bert = BertModel(BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64))
    bert.save_pretrained(tmp_path / "bert")
    GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=1, n_head=2, n_positions=64)).save_pretrained(
        tmp_path / "gpt2")
    cfg = tiny(**{"model.vision_backbone": str(tmp_path / "vit"), "model.text_backbone": str(tmp_path / "bert"),
                  "model.decoder_backbone": str(tmp_path / "gpt2")})
    m = QFT(cfg.model, V, PAD, BOS, EOS)
    assert m.image_encoder.channels == 3  # grey X-rays are repeated to the backbone's channels
    emb = m.text_encoder.backbone.get_input_embeddings().weight
    assert torch.equal(emb, bert.get_input_embeddings().weight)
    assert torch.isfinite(m(batch()).loss)
    # a checkpoint rebuilds without the backbone directories (their architecture is stored in config.json)
    import shutil
    from model.checkpoint import load_pretrained, save_checkpoint
    from model.data.tokenizer import train_wordpiece
    tok = train_wordpiece(["a b c"], V)
    save_checkpoint(tmp_path / "ck", m, None, cfg, tok, {"step": 0})
    for d in ("vit", "bert", "gpt2"):
        shutil.rmtree(tmp_path / d)
    m2, _, cfg2 = load_pretrained(tmp_path / "ck")
    assert cfg2.model.vision_backbone is None and cfg2.model.image_channels == 3
    m.eval()
    b = batch()
    assert torch.allclose(m.encode_image(b["pixels0"]).embedding, m2.encode_image(b["pixels0"]).embedding, atol=1e-6)


def test_momentum_encoder_is_an_ema_copy_that_encodes_the_queued_keys():
    torch.manual_seed(0)
    m = QFT(tiny(**{"model.momentum": 0.9, "model.dropout": 0.0}).model, V, PAD, BOS, EOS)
    for mod in m.modules():  # no dropout anywhere: the keys can be recomputed exactly below
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert all(id(p) not in trainable for p in m.momentum_encoder.parameters())  # never optimised
    with torch.no_grad():  # move the online encoder away from its copy
        for p in m.text_encoder.parameters():
            p.add_(0.1)
    online, ema = list(m.text_encoder.parameters())[0].clone(), list(m.momentum_encoder["text_encoder"].parameters())[0].clone()
    b = batch()
    m(b)
    got = list(m.momentum_encoder["text_encoder"].parameters())[0]
    assert torch.allclose(got, 0.9 * ema + 0.1 * online, atol=1e-6)
    # the queues hold the momentum encoder's features of the batch, not the online ones
    img, rep, rq, q = m.momentum_features(b["pixels0"], b["pixels1"], b["report"], b["report_mask"])
    assert torch.allclose(m.image_queue.feats[:8], img, atol=1e-5)
    assert torch.allclose(m.report_queue.feats[:8], rep, atol=1e-5)
    assert torch.allclose(m.report_query_queue.feats[:8], rq, atol=1e-5)
    assert torch.allclose(m.query_queues[1].feats[:8], q[1], atol=1e-5)
    online_rep = m.encode_text(b["report"], b["report_mask"])
    assert not torch.allclose(m.report_queue.feats[:8], online_rep, atol=1e-3)
    m.eval()  # no EMA step and no enqueueing outside training
    before = got.clone()
    m(b)
    assert torch.equal(list(m.momentum_encoder["text_encoder"].parameters())[0], before)
    assert m.image_queue.filled.item() == 8
    assert QFT(tiny(**{"model.momentum": 0.0}).model, V, PAD, BOS, EOS).momentum_encoder is None


def test_queue_negatives_do_not_collapse_the_embeddings():
    """Regression: queued features of the fast-moving online encoder (no momentum encoder) let the model tell
    'this batch' from 'the queue' and drove every embedding to one point (itc -> 2 ln(B + K), retrieval at
    chance). With momentum keys, 4 rotating batches of 8 distinct pairs and a queue of 3 batches are learnt."""
    torch.manual_seed(0)
    K = 24
    m = QFT(tiny(**{"model.queue_size": K, "model.momentum": 0.9, "model.lm_weights": [0, 0, 0]}).model,
            V, PAD, BOS, EOS)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    batches = [batch(seed=s) for s in range(4)]
    for i, b in enumerate(batches):
        b["report_key"] = b["report_key"] + 8 * i  # 32 different reports: the queue holds real negatives
    for step in range(80):
        out = m(batches[step % 4])
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert m.image_queue.filled.item() == K
    uniform = 2 * torch.log(torch.tensor(8.0 + K)).item()
    assert out.itc.item() < uniform / 2 and out.qrc.item() < uniform / 2, (out.itc.item(), out.qrc.item(), uniform)
    m.eval()
    with torch.no_grad():
        b = batches[0]
        img = m.encode_image(b["pixels0"], b["pixels1"]).embedding
        txt = m.encode_text(b["report"], b["report_mask"])
    off = ~torch.eye(8, dtype=torch.bool)
    assert (txt @ txt.t())[off].mean() < 0.9 and (img @ img.t())[off].mean() < 0.9  # not one point
    assert ((img @ txt.t()).argmax(1) == torch.arange(8)).float().mean() >= 0.75  # pairs retrieved


def test_compile_blocks_compiles_each_repeated_block_in_place():
    from model.qft import compile_blocks

    torch.manual_seed(0)
    cfg = tiny(**{"model.dropout": 0.0})
    ref = QFT(cfg.model, V, PAD, BOS, EOS).eval()
    m = QFT(cfg.model, V, PAD, BOS, EOS).eval()
    m.load_state_dict(ref.state_dict())
    keys = list(m.state_dict())
    # online: 1 ViT + 1 BERT + 1 GPT-2 + 1 QFT layer; the momentum copies of the ViT, BERT and QFT layers: 3 more
    assert compile_blocks(m, backend="eager") == 7
    assert list(m.state_dict()) == keys  # checkpoints stay interchangeable
    b = batch()
    with torch.no_grad():
        assert torch.allclose(m(b).loss, ref(b).loss, atol=1e-5)
    compiled = [mod for mod in m.modules() if getattr(mod, "_compiled_call_impl", None) is not None]
    assert len(compiled) == 7 and not any(isinstance(mod, torch.nn.ModuleList) for mod in compiled)


def test_base_config_has_the_paper_shapes():
    """configs/base.json builds the paper's model: ViT-B/16 at 224 (196 patches), 12-layer BERT, 3-layer QFT with
    32 queries, 12-layer GPT-2 cross-attending to both views' 33 tokens; one training step runs (short texts)."""
    from model.qft import param_count

    cfg = load_config("base")
    torch.manual_seed(0)
    m = QFT(cfg.model, 30522, PAD, BOS, EOS)
    sizes = {n: sum(p.numel() for p in getattr(m, n).parameters()) / 1e6
             for n in ("image_encoder", "text_encoder", "qft", "decoder")}
    assert 85 < sizes["image_encoder"] < 87  # ViT-B/16 without pooler
    assert 108 < sizes["text_encoder"] < 110  # BERT-base, 30,522 wordpieces, no pooler
    assert len(m.qft.layers) == 3 and m.qft.queries.shape == (1, 32, 768)
    assert m.decoder.config.n_layer == 12 and m.decoder.config.add_cross_attention
    assert m.momentum_encoder is not None and m.image_queue.size == 2048
    assert 355 < param_count(m) / 1e6 < 370  # 361.7M: the momentum copies are not trainable
    f = m.encode_image(torch.zeros(1, 224, 224, dtype=torch.uint8))
    assert f.patch_tokens.shape == (2, 1, 196, 768) and f.query_tokens.shape == (2, 1, 33, 768)
    assert f.decoder_context.shape == (1, 66, 768)
    b = batch(B=2, S=224)
    out = m(b)
    out.loss.backward()
    assert all(torch.isfinite(torch.tensor(v)) for v in out.items().values())
    assert m.image_encoder.backbone.embeddings.patch_embeddings.projection.weight.grad is not None
