"""Train the demo code model: corpus from the task families -> byte-level BPE -> small GPT-2.

The result is a plain Hugging Face directory (``config.json``, ``model.safetensors`` in fp16,
tokenizer files) that :func:`retrofit_codegen.lm.load_lm` reads like any hub model::

    nice python -m retrofit_codegen.train --out plugins/codegen/retrofit_codegen/assets/tiny-codegen

Recipe (DESIGN.md, "Code generation demo recipe"): 20k samples (70 % slow, 30 % fast), vocab
~1k, 4 layers, d=128, 4 heads, context 128, ~900 steps of 32 whole samples (at most 128 tokens) on one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EOS = "<|endoftext|>"


def build_tokenizer(texts: Sequence[str], vocab_size: int = 1024) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``, wrapped for transformers.

    Left padding, so a batch of prompts ends where generation starts.
    """
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS])
    # every text starts with the end-of-text token, in training and at decoding alike, so a
    # prompt always begins at position 0 right after it, as every training sample did
    bpe._tokenizer.post_processor = TemplateProcessing(single=f"{EOS} $A", special_tokens=[(EOS, bpe.token_to_id(EOS))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS,
                                        pad_token=EOS, unk_token=EOS, padding_side="left")
    tokenizer.model_max_length = 128
    return tokenizer


def build_model(tokenizer: Any, layers: int = 4, width: int = 128, heads: int = 4, context: int = 128,
                seed: int = 0) -> Any:
    """A randomly initialised GPT-2 sized for ``tokenizer``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=context, n_embd=width, n_layer=layers, n_head=heads,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config)


def sample_rows(tokenizer: Any, texts: Sequence[str], context: int = 128) -> Any:
    """One row per text: ``<eos> text <eos>``, right-padded to ``context`` (labels -100 there).

    Whole samples, never windows cut across them: a window that starts inside a sample hides
    the prompt's argument name from the body that must copy it, and the model then learns to
    guess names instead of copying them.
    """
    import torch

    encoded = [ids + [tokenizer.eos_token_id] for ids in tokenizer(list(texts))["input_ids"]]
    rows = torch.full((len(encoded), context), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(encoded), context), -100, dtype=torch.long)
    for i, ids in enumerate(encoded):
        ids = ids[:context]
        rows[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(ids)] = torch.tensor(ids)
    return rows, labels


def train(model: Any, data: Any, steps: int, batch: int = 32, lr: float = 2e-3, seed: int = 0,
          log_every: int = 100) -> list[float]:
    """Next-token training on random batches of ``data`` = (rows, labels) (AdamW, warm-up then cosine)."""
    import torch

    rows, labels = data
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    model.train()
    losses = []
    for step in range(steps):
        pick = torch.randint(0, rows.shape[0], (batch,), generator=generator)
        width = int((labels[pick] != -100).sum(-1).max())  # drop all-padding columns
        ids, target = rows[pick, :width], labels[pick, :width]
        loss = model(input_ids=ids, attention_mask=(target != -100).long(), labels=target).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {sum(losses[-log_every:]) / log_every:.3f}", flush=True)
    model.eval()
    return losses


def save(model: Any, tokenizer: Any, out: Path, half: bool = True, info: dict[str, Any] | None = None) -> Path:
    """Write the model (fp16 safetensors when ``half``) and tokenizer in Hugging Face format."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    (model.to(torch.float16) if half else model).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if info is not None:
        (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line: build the corpus, train, save."""
    import torch

    from .families import corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "assets" / "tiny-codegen")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)  # one thread was never slower on 2 cores, and 2x faster under load
    started = time.monotonic()
    texts = corpus(args.samples, seed=args.seed)
    tokenizer = build_tokenizer(texts, args.vocab)
    model = build_model(tokenizer, seed=args.seed)
    data = sample_rows(tokenizer, texts)
    print(f"corpus {len(texts)} samples, {int((data[1] != -100).sum())} tokens, vocab {len(tokenizer)}, "
          f"{sum(p.numel() for p in model.parameters())} parameters", flush=True)
    losses = train(model, data, args.steps, batch=args.batch, lr=args.lr, seed=args.seed)
    info = {"samples": args.samples, "vocab": len(tokenizer), "steps": args.steps, "batch": args.batch,
            "lr": args.lr, "seed": args.seed, "final_loss": sum(losses[-50:]) / min(50, len(losses)),
            "seconds": round(time.monotonic() - started, 1)}
    out = save(model, tokenizer, args.out, info=info)
    print(f"saved to {out} in {info['seconds']} s", flush=True)
    return out


if __name__ == "__main__":
    main()
