"""The sensitivity probe: ranking, failures, suggestions, TOML snippets, restore, torch groups."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tomllib
from typing import Any

import numpy as np
import pytest
import torch
from retrofit import Domain, Option, hookimpl
from retrofit.config import resolve
from retrofit.evaluator import Evaluator
from retrofit.knobs import KnobSet, ProbeGroup
from retrofit.nn import build_knobs
from retrofit.nn.probe import DeferredKnob, torch_groups
from retrofit.plugins import load
from retrofit.probe import (
    evaluate_knobs,
    format_table,
    groups_for,
    knob_spec,
    probe,
    suggest,
    suggested_rows,
    toml_snippet,
)
from retrofit.toy import DOMAIN as TOY
from torch import nn


def toy_evaluator(**options: Any) -> Evaluator:
    overrides = {f"toy.{key}": value for key, value in options.items()}
    return Evaluator(resolve(TOY, None, {"run.executor": "serial", **overrides}), load(environ={}))


# -- (a) the toy domain: no torch, one group per exposed knob ---------------------------------

def test_toy_probe_reports_a_positive_impact() -> None:
    evaluator = toy_evaluator()
    groups = groups_for(evaluator)
    assert [group.name for group in groups] == ["gains"]  # no probe_groups answer: the exposed knob
    report = probe(evaluator, groups, perturbations=4, batches=2)
    (row,) = report.rows
    assert row.parameters == 8 and row.evaluations == 4 and row.failures == 0
    assert row.impact > 0 and math.isfinite(row.best_improvement)
    assert report.batches == 2 and report.noise == 0.0  # the toy domain is deterministic
    assert 0 < report.baseline < 1
    assert row.specs == [{"name": "gains"}]
    assert tomllib.loads(report.to_toml_snippet()) == {"toy": {"knobs": [{"name": "gains"}]}}
    assert evaluator.model.gains.tolist() == [1.0] * 8  # restored


def test_probe_module_does_not_import_torch() -> None:
    code = "import sys, retrofit.probe, retrofit.nn.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("fault", ["raise", "nan"])
def test_failed_perturbations_are_counted_and_rank_last(fault: str) -> None:
    evaluator = toy_evaluator(fault=fault, fault_rate=1.0)  # every perturbation fails; the baseline never does
    good = ProbeGroup("same gains", tuple(evaluator.knobs.knobs))
    report = probe(evaluator, [good], perturbations=3)
    (row,) = report.rows
    assert row.failures == 3 and row.evaluations == 3 and math.isnan(row.impact)
    assert ("injected fault" if fault == "raise" else "nan") in row.error
    assert suggest(report, 100) == []  # a group that only fails is never suggested
    plain = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert plain["rows"][0]["impact"] is None and plain["rows"][0]["losses"] == [None] * 3
    assert evaluator.model.gains.tolist() == [1.0] * 8


def test_evaluate_knobs_matches_the_evaluator() -> None:
    from retrofit.evaluator import Task

    evaluator = toy_evaluator()
    natural = evaluator.space.identity * 1.5
    whole = evaluator.evaluate(Task(0, "train", natural))
    mine = evaluate_knobs(evaluator, evaluator.knobs, natural)
    assert mine.loss == whole.loss and mine.metrics == whole.metrics
    unmodified = evaluator.evaluate(Task(0, "train", evaluator.space.identity))
    assert evaluate_knobs(evaluator, None, None).loss == unmodified.loss


def test_a_broken_group_is_reported_and_the_rest_still_probed() -> None:
    from rich.console import Console

    evaluator = toy_evaluator()
    (knob,) = evaluator.knobs.knobs
    broken = ProbeGroup("twice the same knob", (knob, knob))  # KnobSet refuses repeated names
    seen: list[tuple[int, int, str]] = []
    report = probe(evaluator, [broken, ProbeGroup("gains", (knob,))], progress=lambda *args: seen.append(args))
    assert [row.name for row in report.rows] == ["gains", "twice the same knob"]
    assert report.rows[1].evaluations == 0 and "unique" in report.rows[1].error
    assert seen == [(1, 2, "twice the same knob"), (2, 2, "gains")]
    console = Console(width=200, record=True)
    console.print(format_table(report))
    assert "twice the same knob: PluginError" in console.export_text()


# -- (b) the acceptance problem: a planted rescaling of the last layer ------------------------

PLANTED = torch.tensor([1.2, 0.85, 1.15, 0.8])  # per output channel: every channel 13-25 % off


class Regressor(nn.Module):
    """A small MLP whose outputs are sums of many positive contributions (as in most trained nets)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.Linear(32, 4)
        with torch.no_grad():
            self.head.weight.abs_()
            self.head.bias.abs_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Planted:
    """A domain whose target is the model's own output with its last layer's channels rescaled.

    The loss is the share of outputs off by more than 10 %: a step function of any knob.
    """

    DOMAIN = Domain(name="planted", help="planted last-layer rescaling",
                    options=(Option("samples", 256, "points per batch"),), objective={"off_rate": 1.0})

    def __init__(self) -> None:
        self.reference = Regressor().eval()

    @hookimpl
    def retrofit_register_domains(self, register: Any) -> None:
        register(self.DOMAIN)

    @hookimpl
    def retrofit_load_model(self, domain: str) -> nn.Module | None:
        return Regressor().eval() if domain == "planted" else None

    @hookimpl
    def retrofit_expose_parameters(self, domain: str, model: Any) -> list | None:
        return build_knobs(model, [{"kind": "bias_shift", "target": "body.0.bias"}]) if domain == "planted" else None

    @hookimpl
    def retrofit_batches(self, domain: str, split: str) -> list | None:
        return [(split, index) for index in range(3)] if domain == "planted" else None

    @hookimpl
    def retrofit_evaluate(self, domain: str, model: Any, batch: Any, config: Any) -> dict | None:
        if domain != "planted":
            return None
        split, index = batch
        generator = torch.Generator().manual_seed(1000 * (split == "validation") + index)
        inputs = torch.randn(config.options["samples"], 6, generator=generator)
        with torch.no_grad():
            target = self.reference(inputs) * PLANTED
            off = (model(inputs) - target).abs() > 0.1 * target.abs()
        return {"off_rate": float(off.float().mean())}


@pytest.fixture(scope="module")
def planted() -> Evaluator:
    return Evaluator(resolve(Planted.DOMAIN, None, {}), load(extra=[Planted()], environ={}))


def bits(tensor: torch.Tensor) -> torch.Tensor:
    ints = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return tensor.detach().contiguous().view(ints[tensor.element_size()])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_planted_last_layer_ranks_first(planted: Evaluator, seed: int) -> None:
    groups = groups_for(planted)  # answered by the core's torch plugin
    assert {g.name for g in groups} >= {"body.0 channel gains", "body.2 bias", "head output gains", "head bias"}
    report = probe(planted, groups, perturbations=4, scale=2.0, batches=2, seed=seed)
    assert report.baseline == 1.0  # every output is off by more than 10 %
    assert len(report.rows) == len(groups) == 9
    assert report.rows[0].name.startswith("head "), [(r.name, r.impact) for r in report.rows]
    assert report.rows[0].impact > 0


def test_probe_restores_every_tensor_bit_for_bit(planted: Evaluator) -> None:
    model = planted.model
    before = {key: bits(value).clone() for key, value in model.state_dict().items()}
    report = probe(planted, groups_for(planted), perturbations=2, scale=3.0, batches=1)
    assert all(row.evaluations == 2 for row in report.rows)
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(bits(after[key]), value), key
    assert all(not module._forward_hooks for module in model.modules())


# -- (c) suggestions within a budget, pasteable TOML ------------------------------------------

@pytest.fixture(scope="module")
def planted_report(planted: Evaluator):
    return probe(planted, groups_for(planted), perturbations=4, scale=2.0, batches=2, seed=0)


@pytest.mark.parametrize("budget", [4, 20, 36, 1000])
def test_suggest_respects_the_budget_and_pastes_back(planted_report, budget: int) -> None:
    rows = suggested_rows(planted_report, budget)
    assert rows and sum(row.parameters for row in rows) <= budget
    assert rows[0] is planted_report.rows[0]  # the top group fits every budget here (4 parameters)
    assert all(row.impact > 0 for row in rows)
    names = [row.name for row in rows]
    assert not {"head channel gains", "head output gains"} <= set(names)  # one gain per layer
    specs = suggest(planted_report, budget)
    snippet = planted_report.to_toml_snippet(parameter_budget=budget)
    parsed = tomllib.loads(snippet)
    assert parsed == {"planted": {"knobs": specs}}
    knobs = build_knobs(Regressor(), parsed["planted"]["knobs"])
    assert sum(knob.size for knob in knobs) == sum(row.parameters for row in rows)
    KnobSet(knobs)  # one valid search space: unique names, no tensor twice


def test_toml_snippet_quotes_what_it_must() -> None:
    text = toml_snippet("my domain", [{"kind": "steering", "target": 'a."b"', "width": 3, "log": False},
                                      {"name": "x\ty", "lower": None, "sigma": 0.25}])
    assert tomllib.loads(text) == {"my domain": {"knobs": [
        {"kind": "steering", "target": 'a."b"', "width": 3, "log": False}, {"name": "x\ty", "sigma": 0.25}]}}


def test_knob_spec_keeps_kind_target_and_kind_arguments() -> None:
    (knob,) = build_knobs(Regressor(), [{"kind": "channel_gain", "target": "head.weight", "sigma": 0.2}])
    assert knob_spec(knob.describe()) == {"kind": "channel_gain", "target": "head.weight", "log": True, "dim": 0}


def test_format_table_marks_the_suggested_groups(planted_report) -> None:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(format_table(planted_report, parameter_budget=20))
    text = console.export_text()
    assert "planted: sensitivity of 9 parameter groups" in text
    assert planted_report.rows[0].name in text and "yes" in text


# -- (d) torch groups -------------------------------------------------------------------------

class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.plain = nn.LayerNorm(4, elementwise_affine=False)
        self.wide = nn.Linear(4, 5000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.norm(self.stem(x))).permute(0, 2, 3, 1)
        return self.wide(self.plain(y))


def test_torch_groups_cover_layers_and_skip_huge_ones() -> None:
    model = Mixed().eval()
    names = [group.name for group in torch_groups(model, max_groups=None)]
    assert names == ["stem channel gains",  # no bias: output gains would equal the channel gains
                     "norm channel gains", "norm bias", "norm output gains",
                     "up channel gains", "up bias", "up output gains"]
    # plain has no parameters; wide's groups (5000 channels each) are beyond max_group_size
    assert [g.name for g in torch_groups(model, max_groups=None, max_group_size=5000)][-3:] == [
        "wide channel gains", "wide bias", "wide output gains"]
    up = next(g for g in torch_groups(model) if g.name == "up channel gains")
    assert up.size == 4 and up.knobs[0].describe()["dim"] == 1  # transposed conv: output channels on dim 1
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        reference = model(x)
        for group in torch_groups(model, max_groups=None):
            knobs = KnobSet(group.knobs)
            with knobs.applied(knobs.space.to_natural(np.ones(knobs.space.size))):
                changed = model(x)
            assert not torch.equal(changed, reference), group.name
        assert torch.equal(model(x), reference)


def test_torch_groups_spread_over_depth_and_defer_copies() -> None:
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(10)])
    everything = torch_groups(model, max_groups=None)
    assert len(everything) == 30
    kept = torch_groups(model, max_groups=7)
    assert len(kept) == 7 and kept[0].name == everything[0].name and kept[-1].name == everything[-1].name
    assert [g.name for g in torch_groups(model, max_groups=1)] == ["9 output gains"]
    knob = kept[0].knobs[0]
    assert isinstance(knob, DeferredKnob) and knob._knob is None  # no weight copy held between uses
    before = model[0].weight.detach().clone()
    with KnobSet([knob]).applied(knob.identity() + 0.5):
        assert knob._knob is not None and not torch.equal(model[0].weight, before)
    assert knob._knob is None and torch.equal(model[0].weight, before)
    assert build_knobs(model, [knob_spec(knob.describe())])[0].describe() == knob.describe()


def test_probe_groups_hook_answers_only_for_torch_models(planted: Evaluator) -> None:
    hook = planted.plugins.hook.retrofit_probe_groups
    assert hook(domain="planted", model=object(), config=planted.config) is None
    assert len(hook(domain="planted", model=planted.model, config=planted.config)) == 9
