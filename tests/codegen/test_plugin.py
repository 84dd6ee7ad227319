"""The codegen domain end to end: a short real run with a tiny model, the judge on the
references (scores, speed-ups), the loss and its default pass-rate constraint, and bad input."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from retrofit import UsageError
from retrofit.cli import main
from retrofit.config import resolve
from retrofit_codegen.plugin import (
    DOMAIN,
    batch_metrics,
    build_codegen_knobs,
    load_problem,
    rates,
    retrofit_aggregate,
    retrofit_batches,
    sample_score,
)

from .helpers import tiny_lm_dir

SMALL = ["--train-per-family", "1", "--validation-per-family", "1", "--validation-samples", "1",
         "--max-new-tokens", "24", "--repeats", "1"]


def _config(**options):
    overrides = {"codegen.model": str(tiny_lm_dir()), "codegen.train_per_family": 1,
                 "codegen.validation_per_family": 1, "codegen.validation_samples": 1, "run.executor": "serial"}
    overrides.update({f"codegen.{k}": v for k, v in options.items()})
    return resolve(DOMAIN, None, overrides)


def test_tune_with_a_tiny_model_reports_the_metrics_for_baseline_and_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["codegen", "tune", "--model", str(tiny_lm_dir()), *SMALL, "--budget", "4", "--workers", "1",
                 "--out", "R"])
    assert code == 0
    summary = json.loads((tmp_path / "R" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["evaluations"] == 4
    for who in ("baseline", "best"):
        for split in ("train", "validation"):
            metrics = summary[who][split]["metrics"]
            assert {"pass_rate", "fast_share", "speedup", "score"} <= set(metrics)
            assert metrics["samples"] == 11
    assert summary["constraints"] == ["pass_rate >= baseline - 0.01"]  # the domain's default, run by the core
    knobs = {k["name"]: k for k in summary["parameters"]["knobs"]}
    assert set(knobs) == {"logit_bias", "temperature"}  # divergence-token biases and the temperature
    assert 4 <= knobs["logit_bias"]["size"] <= 12 and summary["parameters"]["count"] == knobs["logit_bias"]["size"] + 1
    samples = (tmp_path / "R" / "samples.md").read_text()
    assert "unmodified" in samples and "retrofitted" in samples
    lines = (tmp_path / "R" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 11 and {json.loads(line)["model"] for line in lines} == {"unmodified", "retrofitted"}


def test_the_judge_scores_the_references_slow_zero_fast_one():
    problem = load_problem(_config(repeats=3))
    try:
        tasks = problem.splits["train"][:4]
        batch = [(task, 0) for task in tasks] * 2
        codes = [problem.problems[t].reference for t in tasks] + [problem.problems[t].fast_reference for t in tasks]
        results = problem.judged(batch, codes)
        assert all(r.status == "passed" for r in results)
        slow, fast = results[:4], results[4:]
        assert all(r.fast for r in fast) and not any(r.fast for r in slow)
        assert all(sample_score(r, -1.0) > 0.5 for r in fast)
        assert all(abs(sample_score(r, -1.0)) < 0.5 for r in slow)
        executed = problem.judge.executed
        assert problem.judged(batch, codes) == results and problem.judge.executed == executed  # cached
        metrics = rates([batch_metrics(results, -1.0)])
        assert metrics["pass_rate"] == 1.0 and metrics["fast_share"] == 0.5
        assert metrics["speedup"] == pytest.approx(math.exp(sum(math.log(r.speedup) for r in results) / 8))
        assert metrics["speedup"] > 1.0
        wrong = problem.judged([(tasks[0], 0)], ["\n    return None\n"])
        assert wrong[0].status == "failed" and sample_score(wrong[0], -1.0) == -1.0
    finally:
        if problem.judge is not None:
            problem.judge.close()


def _result(status="passed", speedup=1.0, fast=False):
    return SimpleNamespace(status=status, speedup=speedup, fast=fast, reference_seconds=1.0,
                           fast_reference_seconds=0.01)


def test_the_loss_is_minus_the_mean_score_and_rates_are_over_all_samples():
    config = _config()
    ok = [_result(speedup=100.0, fast=True) for _ in range(10)]
    slow = [_result() for _ in range(9)] + [_result("failed")]
    better = retrofit_aggregate(domain="codegen", metrics=[batch_metrics(ok, -1.0)], config=config)
    assert better.loss == pytest.approx(-1.0) and better.violations == ()
    assert better.metrics["speedup"] == pytest.approx(100.0) and better.metrics["fast_share"] == 1.0
    # two batches of unequal size: rates over the 11 samples, not a mean of the batches' rates
    mixed = retrofit_aggregate(domain="codegen", metrics=[batch_metrics(slow, -1.0), batch_metrics(ok[:1], -1.0)],
                               config=config)
    assert mixed.metrics["pass_rate"] == pytest.approx(10 / 11) and mixed.metrics["samples"] == 11
    assert mixed.loss == pytest.approx(-(1.0 - 1.0) / 11)  # nine slow (0), one failed (-1), one fast (1)


def test_the_pass_rate_constraint_is_the_domains_default_and_can_be_removed(tmp_path):
    from retrofit.reductions import constraint_violations, parse_constraint

    assert dict(DOMAIN.constraints) == {"pass_rate": ">= baseline - 0.01"} and DOMAIN.problems() == []
    config = _config()
    assert dict(config.constraints) == {"pass_rate": ">= baseline - 0.01"}
    constraints = [parse_constraint(f"{m} {c}") for m, c in config.constraints.items()]
    base = rates([batch_metrics([_result() for _ in range(100)], -1.0)])
    drop = rates([batch_metrics([_result(speedup=100.0, fast=True) for _ in range(98)] + [_result("failed")] * 2,
                                -1.0)])
    within = rates([batch_metrics([_result(speedup=100.0, fast=True) for _ in range(99)] + [_result("failed")],
                                  -1.0)])
    assert constraint_violations(drop, constraints, base) == [pytest.approx(0.01)]  # 2 pp down: violated
    assert constraint_violations(within, constraints, base) == [0.0]  # 1 pp down: allowed
    assert dict(resolve(DOMAIN, None, {"constraints.pass_rate": ""}).constraints) == {}


def test_batches_are_small_picklable_and_the_same_for_every_call():
    config = _config(samples=2, batch_size=5)
    train = retrofit_batches(domain="codegen", config=config, split="train")
    assert sum(len(b) for b in train) == 22 and max(len(b) for b in train) == 5
    assert train == retrofit_batches(domain="codegen", config=config, split="train")
    assert len({seed for b in train for _, seed in b}) == 22  # each sample its own stream
    validation = retrofit_batches(domain="codegen", config=config, split="validation")
    assert not {t for b in train for t, _ in b} & {t for b in validation for t, _ in b}


def test_bad_options_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="samples"):
        load_problem(_config(samples=0))
    with pytest.raises(UsageError, match="no such directory"):
        load_problem(_config(model=str(tmp_path / "nothing")))
    with pytest.raises(UsageError, match="no such file"):
        load_problem(_config(problems=str(tmp_path / "absent.jsonl")))
    assert main(["codegen", "tune", "--model", str(tmp_path / "nothing"), "--budget", "2"]) == 2


def test_knob_options_choose_groups_temperature_and_steering():
    from retrofit.evaluator import Evaluator, Task

    problem = load_problem(_config(bias_groups="sides", steering_layer=1, tune_temperature=False))
    knobs = {k.name: k for k in build_codegen_knobs(problem)}
    assert set(knobs) == {"logit_bias", "steering:1"}
    assert knobs["logit_bias"].size == 2 and knobs["steering:1"].size == 32
    with pytest.raises(UsageError, match="layers"):
        load_problem(_config(steering_layer=7))
    with pytest.raises(UsageError, match="no knobs"):
        build_codegen_knobs(load_problem(_config(bias_tokens=0, tune_temperature=False)))
    evaluator = Evaluator(_config(steering_layer=0, max_new_tokens=8, repeats=1))
    values = evaluator.space.identity.copy()
    # a large steering vector on the first layer's output (not constant: layer norms remove a uniform shift)
    values[-32:] = 5.0 * np.random.default_rng(0).standard_normal(32)
    moved = evaluator.evaluate(Task(1, "train", values))
    assert moved.error is None and moved.metrics["samples"] == 11
    model = evaluator.model
    assert model.controls.is_identity()  # the knobs restored the controls
    batch = evaluator.batches("train")[0]
    with evaluator.knobs.applied(values):
        steered = model.completions(batch)
    assert steered != model.completions(batch)
