"""The model's shape as an LM folder's config.json (the Hugging Face config it was exported from) states it: what
the runners and the LM bench need beside the runtime's own file."""
from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import UsageError


def config_shape(folder: str | Path) -> dict:
    """layers, kv_heads, head_size, context_length (max_position_embeddings), vocab_size and eos_token_ids, from
    ``folder``/config.json (its text_config, for a multimodal config); unreadable: a UsageError."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder}: no readable config.json ({exc})") from None
    text = config.get("text_config", config)
    heads = int(text.get("num_attention_heads", 1))
    eos = text.get("eos_token_id", config.get("eos_token_id"))
    return {"layers": int(text.get("num_hidden_layers", 0)),
            "kv_heads": int(text.get("num_key_value_heads") or heads),
            "head_size": int(text.get("head_dim") or int(text.get("hidden_size", 0)) // max(heads, 1)),
            "context_length": int(text.get("max_position_embeddings") or 2048),
            "vocab_size": int(text.get("vocab_size", 0)),
            "eos_token_ids": tuple(int(e) for e in (eos if isinstance(eos, list) else [eos] if eos is not None
                                                    else []))}
