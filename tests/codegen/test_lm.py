"""A tiny random GPT-2 with a locally built tokenizer goes through the transformers code path:
saved in Hugging Face format, loaded through the Auto classes, decoded greedily and sampled."""

from __future__ import annotations

import pytest
import torch
from retrofit import UsageError
from retrofit_codegen.families import FAMILIES
from retrofit_codegen.lm import load_lm
from retrofit_codegen.train import build_model, build_tokenizer, sample_rows, train

from .helpers import tiny_lm_dir

PROMPTS = [family.prompt("solve", "xs") for family in FAMILIES[:5]]


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(1)
    return load_lm(str(tiny_lm_dir()))


def test_the_model_loads_through_the_auto_classes(lm):
    assert type(lm.model).__name__ == "GPT2LMHeadModel"
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.eos_token_id is not None
    assert lm.context == 128 and lm.vocab_size == len(lm.tokenizer)
    text = PROMPTS[0]
    ids = lm.encode(text)
    assert ids[0] == lm.tokenizer.eos_token_id  # the start token every training sample had
    assert lm.tokenizer.decode(ids, skip_special_tokens=True) == text  # byte-level BPE round-trips


def test_greedy_decoding_is_deterministic_and_independent_of_the_batch(lm):
    together = lm.complete(PROMPTS, [0] * len(PROMPTS), temperature=0, max_new_tokens=12)
    alone = [lm.complete([p], [0], temperature=0, max_new_tokens=12)[0] for p in PROMPTS]
    assert together == alone
    assert lm.complete(PROMPTS, [9] * len(PROMPTS), temperature=0, max_new_tokens=12) == together


def test_sampling_is_fixed_by_each_samples_seed(lm):
    first = lm.complete(PROMPTS, [1, 2, 3, 4, 5], temperature=1.0, max_new_tokens=12)
    again = lm.complete(PROMPTS, [1, 2, 3, 4, 5], temperature=1.0, max_new_tokens=12)
    other = lm.complete(PROMPTS, [6, 7, 8, 9, 10], temperature=1.0, max_new_tokens=12)
    assert first == again
    assert first != other  # an untrained model's distribution is nearly flat


def test_a_logits_processor_steers_every_token(lm):
    token = lm.encode(" return", special=False)[0]

    def force(input_ids, scores):
        scores = scores.clone()
        scores[:, token] += 1000.0
        return scores

    out = lm.complete(PROMPTS[:2], [0, 1], temperature=1.0, max_new_tokens=6, processors=[force])
    assert out == [" return" * 6] * 2


def test_completions_stop_at_the_end_of_the_function(lm):
    assert lm.truncate("\n    return 1\ndef other():\n    pass") == "\n    return 1"
    assert lm.truncate("\n    x = 1\n    # comment\n    return x\n") == "\n    x = 1\n    # comment\n    return x\n"


def test_a_prompt_longer_than_the_context_and_missing_models_are_usage_errors(lm, tmp_path):
    with pytest.raises(UsageError, match="context"):
        lm.complete(["x = 1\n" * 200], [0])
    with pytest.raises(UsageError, match="no such directory"):
        load_lm(str(tmp_path / "absent"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(UsageError, match="cannot load"):
        load_lm(str(tmp_path / "broken"))


def test_a_few_training_steps_lower_the_loss():
    texts = [FAMILIES[0].prompt("f", "xs") + FAMILIES[0].body("fast", "f", "xs")] * 20
    tokenizer = build_tokenizer(texts, vocab_size=300)
    model = build_model(tokenizer, layers=1, width=32, heads=2, context=32, seed=0)
    losses = train(model, sample_rows(tokenizer, texts, context=32), steps=40, batch=8, lr=1e-2, log_every=0)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
