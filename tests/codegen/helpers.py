"""A tiny random GPT-2 with a locally built byte-level BPE tokenizer, made once per test process."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def tiny_lm_dir() -> Path:
    """A Hugging Face directory (config, safetensors, tokenizer) of an untrained 2-layer GPT-2."""
    from retrofit_codegen.families import corpus
    from retrofit_codegen.train import build_model, build_tokenizer, save

    texts = corpus(400, seed=1)
    tokenizer = build_tokenizer(texts, vocab_size=400)
    model = build_model(tokenizer, layers=2, width=32, heads=2, context=128, seed=0)
    out = Path(tempfile.mkdtemp(prefix="tiny-codegen-")) / "model"
    return save(model, tokenizer, out, half=False)
