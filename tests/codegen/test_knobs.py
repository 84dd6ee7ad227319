"""The codegen knobs: identity is exact, apply/restore round-trip, the baseline view, and the
automatically chosen divergence tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from retrofit import UsageError
from retrofit.knobs import KnobSet
from retrofit_codegen.families import family_problems
from retrofit_codegen.knobs import (
    BiasKnob,
    Controls,
    LogitBias,
    SteeringHook,
    SteeringKnob,
    TemperatureKnob,
    divergence_tokens,
    token_groups,
    transformer_layers,
)
from retrofit_codegen.lm import load_lm

from .helpers import tiny_lm_dir


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(1)
    return load_lm(str(tiny_lm_dir()))


def test_bias_and_temperature_knobs_write_the_controls_and_restore_them():
    controls = Controls(groups=[[1, 2], [5]], vocab_size=8, temperature=0.8)
    knobs = KnobSet([BiasKnob(controls, ["fast", "slow"]), TemperatureKnob(controls)])
    assert controls.is_identity() and controls.bias_vector() is None
    assert list(knobs.space.identity) == [0.0, 0.0, 0.8]
    with knobs.applied(np.array([2.0, -3.0, 0.5])):
        assert not controls.is_identity() and controls.temperature == 0.5
        vector = controls.bias_vector()
        assert vector.tolist() == [0, 2, 2, 0, 0, -3, 0, 0]
        scores = torch.zeros((2, 8))
        assert LogitBias(controls)(None, scores)[1].tolist() == vector.tolist()
        with controls.identity_view():
            assert controls.is_identity() and controls.bias_vector() is None and controls.temperature == 0.8
        assert controls.temperature == 0.5 and controls.bias_vector() is not None
    assert controls.is_identity() and controls.temperature == 0.8


def test_the_steering_hook_is_a_no_op_at_identity_and_shifts_hidden_states_otherwise(lm):
    controls = Controls(groups=[], vocab_size=lm.vocab_size)
    layer = transformer_layers(lm.model)[1]
    handle = layer.register_forward_hook(SteeringHook(controls))
    try:
        ids = torch.tensor([lm.encode("def f(xs):")])
        with torch.no_grad():
            plain = lm.model(input_ids=ids).logits
            knob = SteeringKnob(controls, 1, lm.model.config.n_embd, sigma=0.1)
            # not a constant vector: the layer norms downstream would remove a uniform shift
            with KnobSet([knob]).applied(np.random.default_rng(0).standard_normal(knob.size)):
                steered = lm.model(input_ids=ids).logits
                with controls.identity_view():
                    viewed = lm.model(input_ids=ids).logits
            after = lm.model(input_ids=ids).logits
    finally:
        handle.remove()
    assert (plain - steered).abs().max() > 1e-3
    assert torch.equal(plain, viewed) and torch.equal(plain, after)


def test_divergence_tokens_separate_slow_from_fast_starts(lm):
    problems = family_problems("train", per_family=2)
    slow, fast = divergence_tokens(lm, problems)
    ambiguous = set(slow) & set(fast)  # this tiny vocabulary splits some words: a few tokens start both
    groups, names = token_groups(lm, problems, count=100)
    chosen = {t for g in groups for t in g}
    assert all(len(g) == 1 for g in groups) and chosen == (set(slow) | set(fast)) - ambiguous
    assert {n.split(":")[0] for n in names} == {"slow", "fast"}
    assert len(token_groups(lm, problems, count=3)[0]) == 3
    sides, side_names = token_groups(lm, problems, count=12, mode="sides", extra=["sorted("])
    assert side_names[:2] == ["fast", "slow"] and side_names[2].startswith("text:")
    assert set(sides[0]) == set(fast) - ambiguous and set(sides[1]) == set(slow) - ambiguous
    with pytest.raises(UsageError, match="bias_groups"):
        token_groups(lm, problems, count=3, mode="words")


def test_biasing_a_divergence_token_changes_what_the_model_writes(lm):
    problems = family_problems("train", per_family=1)
    groups, names = token_groups(lm, problems, count=12)
    controls = Controls(groups=groups, vocab_size=lm.vocab_size)
    knob = BiasKnob(controls, names)
    prompts = [p.prompt for p in problems[:4]]
    before = lm.complete(prompts, [0, 1, 2, 3], temperature=1.0, max_new_tokens=4, processors=[LogitBias(controls)])
    values = np.zeros(knob.size)
    values[0] = 10.0  # the most frequent divergence token, forced
    with KnobSet([knob]).applied(values):
        forced = lm.complete(prompts, [0, 1, 2, 3], temperature=1.0, max_new_tokens=4,
                             processors=[LogitBias(controls)])
    token = lm.tokenizer.decode(groups[0])
    assert before != forced and all(token in text for text in forced)
