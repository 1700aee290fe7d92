"""Micro model shapes shared by the model tests (one place to shrink or grow them)."""

MICRO_MODEL = {
    "model.image_size": 32, "model.num_queries": 4,
    "model.vision_config": {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "intermediate_size": 64, "patch_size": 8},
    "model.qft_hidden": 32, "model.qft_heads": 2,
}


def micro(max_positions: int, **over) -> dict:
    """Config overrides for a 1-layer, 32-wide QFT whose text models hold `max_positions` tokens."""
    return {
        **MICRO_MODEL,
        "model.text_config": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
                              "num_attention_heads": 2, "intermediate_size": 64,
                              "max_position_embeddings": max_positions},
        "model.decoder_config": {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2,
                                 "n_positions": max_positions},
        **over,
    }
