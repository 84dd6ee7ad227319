"""The default optimiser recovers a planted rescaling on the synthetic retrofit problem.

:class:`retrofit.nn.synthetic.RescaleProblem`: 8 per-channel gains on the last layer of a small
MLP, a thresholded (non-differentiable) loss, and a known optimum (log-gains = log planted).
The budget below was measured (see docs/benchmarks.md, "Recovering a planted rescaling").
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import history
from retrofit.evaluator import Task
from retrofit.nn.synthetic import KNOB, METRIC, RescaleProblem

#: planted log-gains ~ N(0, SPREAD); the stated recovery budget holds for this spread
SPREAD = 0.25
#: train evaluations (candidate 0 included) within which "auto" recovers the planted gains
BUDGET = 400
#: recovered means: held-out loss at most this, and every log-gain within this of the optimum
#: (the loss is exactly 0 once each gain is within 10 % of its planted value)
LOSS_TOLERANCE, LOG_GAIN_TOLERANCE = 0.02, 0.15


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more intra-op threads only slow it down
    yield
    torch.set_num_threads(threads)


def test_the_planted_optimum_is_exact_and_the_identity_is_not():
    problem = RescaleProblem(spread=SPREAD)
    evaluator = problem.evaluator()
    for split in ("train", "validation"):
        assert evaluator.evaluate(Task(0, split, problem.optimum())).loss == 0.0
        assert evaluator.evaluate(Task(0, split, np.zeros(8))).loss > 0.2
    assert problem.clean_loss(problem.optimum()) == 0.0


def test_candidate_zero_is_the_unmodified_model(tmp_path):
    problem = RescaleProblem(spread=SPREAD)
    summary = problem.tune(tmp_path / "run", budget=5)
    first = history(tmp_path / "run")[0]
    assert first["id"] == 0 and first["values"][KNOB] == [0.0] * 8

    # the same model built fresh, no knob at all, evaluated by hand on every batch
    options = problem.domain.defaults()
    model = problem.build_model(options)
    for split, count in (("train", options["train_batches"]), ("validation", options["validation_batches"])):
        by_hand = np.mean([problem.metrics(model, options, split, index)[METRIC] for index in range(count)])
        assert summary["baseline"][split]["loss"] == pytest.approx(by_hand, abs=1e-12)
    assert first["loss"] == summary["baseline"]["train"]["loss"]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_default_optimizer_recovers_the_planted_rescaling(tmp_path, seed):
    problem = RescaleProblem(spread=SPREAD)
    summary = problem.tune(tmp_path / "run", budget=BUDGET, seed=seed)  # optimizer "auto"
    assert summary["optimizer"]["requested"] == "auto"
    assert summary["evaluations"] == BUDGET
    assert summary["baseline"]["validation"]["loss"] > 0.2
    assert summary["best"]["validation"]["loss"] <= LOSS_TOLERANCE
    error = np.abs(np.asarray(summary["best"]["values"][KNOB]) - problem.optimum())
    assert error.max() <= LOG_GAIN_TOLERANCE, f"log-gain errors {np.round(error, 3)}"
