"""The codegen knobs: logit biases on token groups, a steering vector, the sampling temperature.

All three write into a :class:`Controls` object that decoding reads, instead of into the
model directly. That keeps candidate 0 exact (identity controls install nothing) and lets the
domain decode with the *baseline* controls at any time (``Controls.identity_view``).

"Divergence tokens" (DESIGN.md): for each task, the first token where the slow and the fast
reference completions differ. A bias on those tokens moves the model's choice between the
two solutions at the point where it is made.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from retrofit import Knob, UsageError

BIAS_LIMIT = 10.0  # logits; beyond that a token is forced or banned outright
TEMPERATURE_BOUNDS = (0.05, 2.0)


@dataclass
class Controls:
    """Decoding controls that knobs set: one bias per token group, temperature, steering."""

    groups: list[list[int]]  # token ids of each bias group
    vocab_size: int
    temperature: float = 1.0
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0))
    steering: np.ndarray | None = None  # added to the output of ``steering_layer``
    _identity: tuple[float, np.ndarray, np.ndarray | None] | None = None

    def __post_init__(self) -> None:
        if self.bias.size != len(self.groups):
            self.bias = np.zeros(len(self.groups))
        self._identity = (self.temperature, self.bias.copy(), None if self.steering is None else self.steering.copy())

    def is_identity(self) -> bool:
        temperature, bias, steering = self._identity  # type: ignore[misc]
        same_steering = (self.steering is None or not np.any(self.steering)) if steering is None else \
            np.array_equal(self.steering, steering)
        return self.temperature == temperature and np.array_equal(self.bias, bias) and same_steering

    @contextmanager
    def identity_view(self) -> Iterator[None]:
        """Temporarily the unmodified controls (the baseline), then back."""
        saved = (self.temperature, self.bias.copy(), None if self.steering is None else self.steering.copy())
        temperature, bias, steering = self._identity  # type: ignore[misc]
        self.temperature, self.bias, self.steering = temperature, bias.copy(), steering
        try:
            yield
        finally:
            self.temperature, self.bias, self.steering = saved

    def bias_vector(self) -> Any | None:
        """The logit bias over the vocabulary (a torch tensor), or None when all zero."""
        if not np.any(self.bias):
            return None
        import torch

        vector = torch.zeros(self.vocab_size)
        for value, tokens in zip(self.bias, self.groups):
            vector[tokens] += float(value)
        return vector


class LogitBias:
    """A transformers-style logits processor adding :meth:`Controls.bias_vector` to the scores."""

    def __init__(self, controls: Controls) -> None:
        self.controls = controls

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        vector = self.controls.bias_vector()
        if vector is None:
            return scores
        return scores + vector[: scores.shape[-1]].to(scores.dtype)


class SteeringHook:
    """A forward hook adding :attr:`Controls.steering` to a layer's hidden states (no-op at zero)."""

    def __init__(self, controls: Controls) -> None:
        self.controls = controls
        self._tensor: tuple[int, Any] | None = None

    def __call__(self, module: Any, inputs: Any, output: Any) -> Any:
        steering = self.controls.steering
        if steering is None or not np.any(steering):
            return None
        import torch

        if self._tensor is None or self._tensor[0] != id(steering):
            self._tensor = (id(steering), torch.as_tensor(steering, dtype=torch.float32))
        vector = self._tensor[1]
        if isinstance(output, tuple):
            return (output[0] + vector.to(output[0].dtype), *output[1:])
        return output + vector.to(output.dtype)


def divergence_tokens(lm: Any, problems: Sequence[Any]) -> tuple[Counter[int], Counter[int]]:
    """Counts of the first differing token of slow vs fast references, on each side."""
    slow: Counter[int] = Counter()
    fast: Counter[int] = Counter()
    for problem in problems:
        if not problem.fast_reference:
            continue
        a = lm.encode(problem.prompt + problem.reference)
        b = lm.encode(problem.prompt + problem.fast_reference)
        for x, y in zip(a, b):
            if x != y:
                slow[x] += 1
                fast[y] += 1
                break
    return slow, fast


def token_groups(lm: Any, problems: Sequence[Any], count: int, mode: str = "tokens",
                 extra: Sequence[str] = ()) -> tuple[list[list[int]], list[str]]:
    """The bias groups and their names.

    ``mode`` "tokens": the ``count`` most frequent divergence tokens, one group each (tokens
    that start a slow path in one task and a fast path in another are dropped: a context-free
    bias cannot serve both). "sides": two groups, all fast-side and all slow-side tokens.
    ``extra`` adds one group per given string (its tokens).
    """
    slow, fast = divergence_tokens(lm, problems)
    ambiguous = set(slow) & set(fast)
    decode = lm.tokenizer.decode
    groups: list[list[int]] = []
    names: list[str] = []
    if mode == "sides":
        for side, counter in (("fast", fast), ("slow", slow)):
            tokens = sorted(t for t in counter if t not in ambiguous)
            if tokens:
                groups.append(tokens)
                names.append(side)
    elif mode == "tokens":
        ranked = Counter({t: n for t, n in (slow + fast).items() if t not in ambiguous}).most_common(count)
        for token, _ in ranked:
            groups.append([token])
            side = "fast" if token in fast else "slow"
            names.append(f"{side}:{decode([token])!r}")
    else:
        raise UsageError(f"codegen.bias_groups must be tokens or sides, got {mode!r}")
    for text in extra:
        tokens = lm.encode(text, special=False)
        if not tokens:
            raise UsageError(f"codegen.bias_strings: {text!r} has no tokens")
        groups.append(tokens)
        names.append(f"text:{text!r}")
    return groups, names


class BiasKnob(Knob):
    """One additive logit bias per token group (identity zeros, bounds +-10 logits)."""

    def __init__(self, controls: Controls, names: Sequence[str], sigma: float = 1.0) -> None:
        self.name = "logit_bias"
        self.controls = controls
        self.size = len(controls.groups)
        self.sigma, self.lower, self.upper = float(sigma), -BIAS_LIMIT, BIAS_LIMIT
        self.group_names = list(names)

    def identity(self) -> np.ndarray:
        return np.zeros(self.size)

    def apply(self, values: np.ndarray) -> None:
        self.controls.bias = np.asarray(values, dtype=float).reshape(-1).copy()

    def restore(self) -> None:
        self.controls.bias = np.zeros(self.size)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "groups": self.group_names,
                "tokens": [list(map(int, g)) for g in self.controls.groups]}


class TemperatureKnob(Knob):
    """The sampling temperature (identity: the ``temperature`` option)."""

    name = "temperature"
    size = 1

    def __init__(self, controls: Controls, sigma: float = 0.15) -> None:
        self.controls = controls
        self._original = float(controls.temperature)
        self.sigma = float(sigma)
        self.lower, self.upper = TEMPERATURE_BOUNDS

    def identity(self) -> np.ndarray:
        return np.array([self._original])

    def apply(self, values: np.ndarray) -> None:
        self.controls.temperature = float(np.asarray(values).reshape(-1)[0])

    def restore(self) -> None:
        self.controls.temperature = self._original


class SteeringKnob(Knob):
    """A vector added to one transformer layer's hidden states (identity zeros)."""

    def __init__(self, controls: Controls, layer: int, width: int, sigma: float) -> None:
        self.name = f"steering:{layer}"
        self.controls = controls
        self.layer = layer
        self.size = int(width)
        self.sigma, self.lower, self.upper = float(sigma), None, None

    def identity(self) -> np.ndarray:
        return np.zeros(self.size)

    def apply(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=float).reshape(-1)
        self.controls.steering = values.copy() if np.any(values) else None

    def restore(self) -> None:
        self.controls.steering = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "layer": self.layer}


def transformer_layers(model: Any) -> list[Any]:
    """The list of transformer blocks of common causal LMs (GPT-2, Llama-like, GPT-NeoX)."""
    for path in ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers"):
        node = model
        try:
            for part in path.split("."):
                node = getattr(node, part)
        except AttributeError:
            continue
        return list(node)
    raise UsageError(f"cannot find the transformer layers of {type(model).__name__} for a steering knob")


def hidden_spread(lm: Any, layer: int, prompts: Sequence[str]) -> float:
    """Standard deviation of one layer's hidden states over ``prompts`` (sets the steering step)."""
    import torch

    block = transformer_layers(lm.model)[layer]
    seen: list[Any] = []

    def keep(module: Any, inputs: Any, output: Any) -> None:
        seen.append((output[0] if isinstance(output, tuple) else output).detach())

    handle = block.register_forward_hook(keep)
    try:
        with torch.no_grad():
            for prompt in prompts[:8]:
                lm.model(input_ids=torch.tensor([lm.encode(prompt)]))
    finally:
        handle.remove()
    return float(torch.cat([s.reshape(-1) for s in seen]).std()) if seen else 1.0
