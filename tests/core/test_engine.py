"""The optimisation loop on the built-in toy domain: records, reproducibility, failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import history
from retrofit.config import resolve
from retrofit.evaluator import Evaluator, Task
from retrofit.toy import DOMAIN

SUMMARY_KEYS = {"domain", "status", "optimizer", "budget", "evaluations", "failed_evaluations", "wall_seconds",
                "executor", "workers", "parameters", "baseline", "best", "improvement"}


def test_summary_has_every_contract_key_and_a_real_baseline(toy_run):
    summary, run_dir = toy_run(budget=40)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["status"] == "finished"
    assert summary["evaluations"] == 40 == len(history(run_dir))
    assert set(summary["optimizer"]) >= {"requested", "used"}
    assert summary["parameters"]["count"] == DOMAIN.defaults()["dim"]
    for who in ("baseline", "best"):
        for split in ("train", "validation"):
            assert set(summary[who][split]) >= {"loss", "metrics"}
    assert set(summary["best"]) >= {"values"}
    assert "validation_loss_relative" in summary["improvement"]

    # candidate 0 is the unmodified model, and the baseline figures are its real evaluation
    first = history(run_dir)[0]
    assert first["id"] == 0 and first["values"]["gains"] == [1.0] * 8
    evaluator = Evaluator(resolve(DOMAIN))
    for split in ("train", "validation"):
        direct = evaluator.evaluate(Task(0, split, evaluator.space.identity))
        assert summary["baseline"][split]["loss"] == direct.loss


def test_the_result_improves_held_out_loss_on_the_toy_problem(toy_run):
    summary, _ = toy_run(budget=150)
    assert summary["best"]["validation"]["loss"] < 0.8 * summary["baseline"]["validation"]["loss"]
    assert summary["improvement"]["validation_loss_relative"] > 0.2


def test_seeded_runs_are_reproducible_and_seeds_matter(toy_run):
    first, first_dir = toy_run(budget=30, seed=3)
    second, second_dir = toy_run(budget=30, seed=3)
    other, other_dir = toy_run(budget=30, seed=4)
    strip = lambda entries: [{k: e[k] for k in ("id", "values", "loss")} for e in entries]
    assert strip(history(first_dir)) == strip(history(second_dir))
    assert first["best"] == second["best"]
    assert strip(history(first_dir)) != strip(history(other_dir))


def test_local_pool_gives_the_same_run_as_serial(toy_run):
    serial, serial_dir = toy_run(budget=24, executor="serial")
    pooled, pooled_dir = toy_run(budget=24, executor="local", workers=1)
    assert [e["loss"] for e in history(serial_dir)] == [e["loss"] for e in history(pooled_dir)]
    assert serial["best"] == pooled["best"]
    assert pooled["executor"] == "local"


def test_two_workers_are_reproducible_and_both_used(toy_run):
    first, first_dir = toy_run(budget=30, executor="local", workers=2)
    second, second_dir = toy_run(budget=30, executor="local", workers=2)
    assert [e["values"] for e in history(first_dir)] == [e["values"] for e in history(second_dir)]
    assert len({e["worker"] for e in history(first_dir)}) == 2


@pytest.mark.parametrize("fault", ["raise", "nan"])
def test_failed_candidates_are_recorded_with_reason_and_the_run_goes_on(toy_run, fault):
    summary, run_dir = toy_run(budget=40, **{"toy.fault": fault, "toy.fault_rate": 0.3})
    entries = history(run_dir)
    failed = [e for e in entries if e["error"]]
    assert len(entries) == 40 and summary["status"] == "finished"
    assert summary["failed_evaluations"] == len(failed) > 0
    reason = "injected fault" if fault == "raise" else "nan"
    assert all(reason in e["error"] and e["loss"] is None for e in failed)
    # the optimiser was told a loss worse than every success
    worst = max(e["loss"] for e in entries if not e["error"])
    assert all(e["told"] > worst for e in failed)


def test_a_worker_that_dies_costs_one_failed_evaluation(toy_run):
    summary, run_dir = toy_run(budget=24, executor="local", workers=2, **{"toy.fault": "exit", "toy.fault_rate": 0.2})
    entries = history(run_dir)
    died = [e for e in entries if e["error"] and "worker died" in e["error"]]
    assert len(entries) == 24 and summary["status"] == "finished"
    assert died and all("exit code 3" in e["error"] for e in died)


def test_a_hanging_evaluation_is_killed_at_the_timeout(toy_run):
    summary, run_dir = toy_run(budget=12, executor="local", workers=2, eval_timeout=2.0,
                               **{"toy.fault": "hang", "toy.fault_rate": 0.15})
    entries = history(run_dir)
    assert len(entries) == 12
    hung = [e for e in entries if e["error"]]
    assert hung and all("timed out after 2 s" in e["error"] for e in hung)


def test_train_selection_picks_the_best_train_loss(toy_run):
    summary, run_dir = toy_run(budget=30, selection="train")
    best_train = min(e["loss"] for e in history(run_dir))
    assert summary["best"]["train"]["loss"] == best_train
    assert summary["best"]["validation"] is not None  # the chosen one is always re-scored


def test_validation_never_reaches_the_optimizer(toy_run):
    """Train and validation batches are disjoint, and history holds train evaluations only."""
    _, run_dir = toy_run(budget=20)
    assert {e["split"] for e in history(run_dir)} == {"train"}
    evaluator = Evaluator(resolve(DOMAIN))
    assert not set(evaluator.batches("train")) & set(evaluator.batches("validation"))


def test_identity_values_leave_the_model_unchanged():
    evaluator = Evaluator(resolve(DOMAIN))
    before = evaluator.model.gains.copy()
    evaluator.evaluate(Task(1, "train", evaluator.space.identity * 2))
    assert np.array_equal(evaluator.model.gains, before)


# -- noise and overfitting control ---------------------------------------------------------
NOISY = {"toy.train_batches": 12, "batches_per_evaluation": 2, "round_size": 4}


def test_candidates_of_a_round_share_their_batches(toy_run):
    summary, run_dir = toy_run(budget=24, **NOISY)
    entries = history(run_dir)
    by_round: dict[int, set] = {}
    for entry in entries:
        assert len(entry["batches"]) == 2
        by_round.setdefault(entry["id"] // 4, set()).add(tuple(entry["batches"]))
    assert all(len(subsets) == 1 for subsets in by_round.values())  # common random numbers
    assert len({next(iter(s)) for s in by_round.values()}) > 1  # rounds draw afresh
    assert summary["noisy"] and summary["optimizer"]["used"] == "DiagonalCMA"


def test_top_candidates_are_reevaluated_and_averaged(toy_run):
    summary, run_dir = toy_run(budget=30, validate_every=10, top_k=2, reevaluations=2, **NOISY)
    lines = (run_dir / "reevaluations.jsonl").read_text().splitlines()
    assert len(lines) >= 2 * 2
    best_train = summary["best"]["train"]
    if summary["best"]["id"] != 0:
        assert best_train["evaluations"] == 3 and best_train["loss_se"] is not None


def test_standard_errors_are_reported(toy_run):
    summary, run_dir = toy_run(budget=10)
    assert history(run_dir)[0]["loss_se"] > 0
    assert summary["baseline"]["validation"]["loss_se"] > 0
    errors = summary["baseline"]["validation"]["standard_errors"]
    assert set(errors) == {"error_rate", "accuracy", "deviation"}
    assert errors["error_rate"] > 0 and errors["deviation"] == 0.0  # the baseline never deviates


def test_the_train_validation_trace_is_recorded_at_every_checkpoint(toy_run):
    summary, run_dir = toy_run(budget=40, validate_every=10)
    trace = summary["checkpoints"]
    assert [point["evaluations"] for point in trace] == [10, 20, 30, 40]
    for point in trace:
        assert point["best_train_loss"] <= point["chosen_train_loss"]
        assert point["chosen_validation_loss"] is not None
    assert len((run_dir / "checkpoints.jsonl").read_text().splitlines()) == 4


def test_early_stop_when_validation_stops_improving(toy_run):
    summary, run_dir = toy_run(budget=600, validate_every=10, patience=2, **{"toy.dim": 2})
    assert summary["status"] == "stopped_early"
    assert summary["evaluations"] < 600 == summary["budget"]
    losses = [point["best_validation_loss"] for point in summary["checkpoints"]]
    assert losses[-1] == losses[-3]


# -- constraints and multiple objectives ---------------------------------------------------
def test_absolute_constraints_are_told_and_respected_by_the_choice(toy_run):
    summary, run_dir = toy_run(budget=60, **{"constraints.deviation": "<= 0.1"})
    entries = history(run_dir)
    violating = [e for e in entries if e["violations"] and e["violations"][0] > 0]
    assert violating, "the search should step outside the constraint sometimes"
    for entry in violating:
        assert entry["violations"][0] == pytest.approx(entry["metrics"]["deviation"] - 0.1)
    assert summary["best"]["validation"]["metrics"]["deviation"] <= 0.1
    assert summary["constraints"] == ["deviation <= 0.1"]
    # violators never take the top re-scoring slots from candidates within the constraint
    rescored = {json.loads(line)["id"] for line in (run_dir / "validation.jsonl").read_text().splitlines()} - {0}
    feasible = sorted((e for e in entries if e["error"] is None and not any(v > 0 for v in e["violations"])),
                      key=lambda e: e["loss"])
    assert rescored and all(any(f["id"] == i for f in feasible) for i in rescored)


def test_baseline_relative_constraints_use_candidate_zero(toy_run):
    summary, run_dir = toy_run(budget=40, **{"constraints.accuracy": ">= baseline"})
    entries = history(run_dir)
    baseline = entries[0]["metrics"]["accuracy"]
    for entry in entries[1:]:
        expected = max(0.0, baseline - entry["metrics"]["accuracy"])
        assert entry["violations"] == [pytest.approx(expected)]
    best = summary["best"]["validation"]["metrics"]["accuracy"]
    assert best >= summary["baseline"]["validation"]["metrics"]["accuracy"]


def test_baseline_constraints_need_ask_order(toy_run):
    from retrofit.errors import UsageError

    with pytest.raises(UsageError, match="tell_order"):
        toy_run(budget=10, tell_order="completion", **{"constraints.accuracy": ">= baseline"})


def test_multiobjective_runs_keep_the_pareto_front_and_pick_by_weights(toy_run):
    weights = {"objective.error_rate": 1.0, "objective.deviation": 0.05}
    summary, run_dir = toy_run(budget=60, multiobjective=True, selection="train", **weights)
    entries = history(run_dir)
    assert all(len(e["told"]) == 2 for e in entries)
    front = summary["pareto"]
    assert 1 < len(front) < len(entries)
    points = {e["id"]: e["told"] for e in entries}
    for member in front:  # nothing dominates a member
        assert not any(all(a <= b for a, b in zip(p, member["objectives"])) and p != member["objectives"]
                       for p in points.values())
    # the pick is the lowest weighted sum, which lies on the front
    assert summary["best"]["id"] in {m["id"] for m in front}
    assert summary["best"]["train"]["loss"] == min(e["loss"] for e in entries)


def test_the_closing_line_gives_a_percentage_only_for_a_positive_loss(toy_run):
    import copy

    from retrofit import display

    summary, run_dir = toy_run(budget=10)
    with display.out.capture() as captured:
        display.print_summary(summary, str(run_dir))
    line = next(text for text in captured.get().splitlines() if text.startswith("validation loss"))
    assert " -> " in line and line.endswith("%")  # an error rate: the relative change means something
    maximised = copy.deepcopy(summary)  # a negative loss (metrics with negative weights)
    maximised["baseline"]["validation"]["loss"], maximised["best"]["validation"]["loss"] = -0.1, -0.6
    maximised["improvement"]["validation_loss_relative"] = 5.0
    with display.out.capture() as captured:
        display.print_summary(maximised, str(run_dir))
    line = next(text for text in captured.get().splitlines() if text.startswith("validation loss"))
    assert line == "validation loss -0.1 -> -0.6"
