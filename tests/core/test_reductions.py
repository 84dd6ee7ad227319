"""retrofit.reductions: hand-computed reducers and standard errors, specs, constraints, Pareto."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from retrofit.errors import ConfigError
from retrofit.reductions import (
    KINDS,
    UNMEASURED_VIOLATION,
    Bound,
    Constraint,
    Reducer,
    bootstrap_se,
    constraint_violations,
    pareto_front,
    parse_constraint,
    parse_constraints,
    parse_reducer,
    parse_reducers,
    pick_by_weights,
    reduce_metrics,
    standard_errors,
    weighted_sum,
)

# four episodes: x is a generic metric, kills / deaths a ratio of sums
EPISODES = [
    {"x": 1.0, "kills": 0, "deaths": 1},
    {"x": 2.0, "kills": 2, "deaths": 0},
    {"x": 3.0, "kills": 1, "deaths": 0},
    {"x": 4.0, "kills": 3, "deaths": 1},
]
FAST = settings(max_examples=40, deadline=None)
samples = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=30)


def batches(values):
    return [{"x": v} for v in values]


def reduce_one(kind, values=None, **params):
    return Reducer("r", kind, "x", **params).reduce(batches(values) if values is not None else EPISODES)


# ---------------------------------------------------------------------------------------------- reducers


@pytest.mark.parametrize(("kind", "params", "expected"), [
    ("mean", {}, 2.5),
    ("median", {}, 2.5),
    ("quantile", {"q": 0.25}, 1.75),  # position 0.75 between 1 and 2
    ("quantile", {"q": 0.9}, 3.7),  # position 2.7 between 3 and 4
    ("cvar", {"alpha": 0.5, "higher_is_worse": True}, 3.5),  # mean of 4 and 3
    ("cvar", {"alpha": 0.5, "higher_is_worse": False}, 1.5),  # mean of 1 and 2
    ("cvar", {"alpha": 0.3, "higher_is_worse": True}, (4 + 0.2 * 3) / 1.2),  # tail of 1.2 batches
    ("cvar", {"alpha": 1.0, "higher_is_worse": True}, 2.5),
    ("rate_above", {"threshold": 2}, 0.5),  # strict: 2 itself is not above
    ("rate_below", {"threshold": 2}, 0.25),
    ("sum", {}, 10.0),
    ("max", {}, 4.0),
    ("min", {}, 1.0),
])
def test_reducers_by_hand(kind, params, expected):
    assert reduce_one(kind, **params) == pytest.approx(expected)


def test_geometric_mean_and_its_positive_values():
    assert reduce_one("geomean", [1, 4, 16]) == pytest.approx(4.0)
    assert reduce_one("geomean", [2, 8]) == pytest.approx(4.0)
    with pytest.raises(ValueError, match=r"'x'.*positive.*batch 1 has 0.0"):
        reduce_one("geomean", [2, 0, 3])
    with pytest.raises(ValueError, match="positive"):
        reduce_one("geomean", [2, -1])


def test_ratio_of_sums_and_its_floor():
    ratio = Reducer("kpl", "ratio", "kills", per="deaths")
    assert ratio.reduce(EPISODES) == pytest.approx(6 / 2)  # not the mean of per-episode ratios
    assert Reducer("kpl", "ratio", "kills", per="deaths", floor=5).reduce(EPISODES) == pytest.approx(6 / 5)
    immortal = [{"kills": 2, "deaths": 0}, {"kills": 1, "deaths": 0}]
    assert Reducer("kpl", "ratio", "kills", per="deaths", floor=1).reduce(immortal) == pytest.approx(3.0)
    with pytest.raises(ValueError, match=r"'kpl'.*sum of 'deaths' is 0.*floor"):
        ratio.reduce(immortal)
    with pytest.raises(ValueError, match=r"'kpl'.*sum of 'deaths' is 0.*floor"):
        ratio.standard_error(immortal)


def test_reducers_skip_batches_without_their_metric():
    mixed = [{"speedup": 2.0, "passed": 1}, {"passed": 0}, {"speedup": 8.0, "passed": 1}]
    assert reduce_metrics(mixed, [Reducer("speedup", "geomean", "speedup"), Reducer("pass_rate", "mean", "passed")]) \
        == pytest.approx({"speedup": 4.0, "pass_rate": 2 / 3})
    with pytest.raises(ConfigError, match=r"'spedup'.*reported: passed, speedup"):
        reduce_metrics(mixed, [Reducer("s", "mean", "spedup")])
    apart = [{"kills": 1}, {"deaths": 1}]
    with pytest.raises(ConfigError, match="both 'kills' and 'deaths'"):
        Reducer("kpl", "ratio", "kills", per="deaths").reduce(apart)


def test_reduce_metrics_keeps_order_and_accepts_specs():
    result = reduce_metrics(EPISODES, [
        {"name": "kills_per_life", "reduce": "ratio", "of": "kills", "per": "deaths", "floor": 1},
        Reducer("x_mean", "mean", "x"),
    ])
    assert list(result) == ["kills_per_life", "x_mean"]
    assert result == pytest.approx({"kills_per_life": 3.0, "x_mean": 2.5})
    with pytest.raises(ConfigError, match="'x_mean'.*unique"):
        reduce_metrics(EPISODES, [Reducer("x_mean", "mean", "x"), Reducer("x_mean", "max", "x")])


# ---------------------------------------------------------------------------------------------- failures


def test_non_finite_input_and_output_are_surfaced():
    with pytest.raises(ValueError, match=r"'x' is nan on batch 1"):
        reduce_one("mean", [1.0, math.nan])
    with pytest.raises(ValueError, match=r"'x' is inf on batch 0"):
        reduce_one("max", [math.inf, 1.0])
    with pytest.raises(ValueError, match=r"metric 'r' \(sum of 'x'\): value is inf"):
        reduce_one("sum", [1e308, 1e308])
    with pytest.raises(ValueError, match=r"metric 'big'.*standard error is inf"):
        Reducer("big", "mean", "x").standard_error(batches([-1e308, 1e308, 0.0]))
    with pytest.raises(TypeError, match="'x' on batch 0 is 'fast'"):
        reduce_one("mean", ["fast"])


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="no batches"):
        reduce_metrics([], [Reducer("m", "mean", "x")])
    with pytest.raises(ValueError, match="no batches"):
        standard_errors([], [Reducer("m", "mean", "x")])
    with pytest.raises(TypeError, match="one mapping"):
        reduce_metrics({"x": 1.0}, [Reducer("m", "mean", "x")])


def test_numpy_and_bool_values_are_numbers():
    assert reduce_one("mean", [np.float32(1.0), np.int64(2), True]) == pytest.approx(4 / 3)


# ---------------------------------------------------------------------------------------------- standard errors


def test_analytic_standard_errors_by_hand():
    ses = standard_errors(EPISODES, [
        Reducer("mean", "mean", "x"),
        Reducer("sum", "sum", "x"),
        Reducer("above", "rate_above", "x", threshold=2),
        Reducer("kpl", "ratio", "kills", per="deaths"),
        Reducer("kpl_floored", "ratio", "kills", per="deaths", floor=5),
    ])
    sd = math.sqrt(5 / 3)  # ddof=1 standard deviation of 1, 2, 3, 4
    assert ses["mean"] == pytest.approx(sd / 2)
    assert ses["sum"] == pytest.approx(sd * 2)
    assert ses["above"] == pytest.approx(math.sqrt(1 / 3) / 2)  # indicators 0, 0, 1, 1
    # R = 3, residuals kills - 3 deaths = -3, 2, 1, 0: sqrt(n) * sd(residuals) / sum(deaths)
    assert ses["kpl"] == pytest.approx(2 * math.sqrt(14 / 3) / 2)
    # floor active (2 deaths < 5): a constant denominator, sqrt(n) * sd(kills) / 5
    assert ses["kpl_floored"] == pytest.approx(2 * sd / 5)
    geo = Reducer("g", "geomean", "x").standard_error(batches([1, 4, 16]))
    assert geo == pytest.approx(4 * math.log(4) / math.sqrt(3))  # delta method: G * sd(log x) / sqrt(n)


def test_one_batch_has_no_standard_error():
    one = [{"x": 2.0, "kills": 1, "deaths": 1}]
    reducers = [Reducer(kind, kind, "x", **params) for kind, params in [
        ("mean", {}), ("median", {}), ("quantile", {"q": 0.5}), ("cvar", {"alpha": 0.5, "higher_is_worse": True}),
        ("rate_above", {"threshold": 1}), ("rate_below", {"threshold": 1}), ("geomean", {}), ("sum", {}),
        ("max", {}), ("min", {})]]
    reducers.append(Reducer("ratio", "ratio", "kills", per="deaths"))
    assert {r.kind for r in reducers} == set(KINDS)
    assert standard_errors(one, reducers) == {r.name: None for r in reducers}
    assert bootstrap_se(one, reducers[0]) is None


def test_bootstrap_is_seeded_and_close_to_the_delta_method():
    rng = np.random.default_rng(7)
    episodes = [{"kills": int(k), "deaths": int(d)} for k, d in zip(rng.poisson(3, 200), rng.poisson(1, 200))]
    ratio = Reducer("kpl", "ratio", "kills", per="deaths", floor=1)
    boot = bootstrap_se(episodes, ratio, resamples=2000, seed=3)
    assert boot == bootstrap_se(episodes, ratio, resamples=2000, seed=3)
    assert boot != bootstrap_se(episodes, ratio, resamples=2000, seed=4)
    assert boot == pytest.approx(ratio.standard_error(episodes), rel=0.15)
    median = Reducer("med", "median", "kills")
    assert median.standard_error(episodes) == median.bootstrap_se(episodes)  # the bootstrap kinds
    with pytest.raises(ValueError, match="resamples"):
        median.bootstrap_se(episodes, resamples=1)


def test_bootstrap_of_an_unfloored_ratio_reports_zero_denominators():
    episodes = [{"kills": 1, "deaths": 0}] * 5 + [{"kills": 1, "deaths": 1}]
    with pytest.raises(ValueError, match="'kpl'.*floor"):
        bootstrap_se(episodes, Reducer("kpl", "ratio", "kills", per="deaths"))


def test_bootstrap_handles_many_batches_in_blocks():
    values = np.random.default_rng(0).normal(size=5000)
    se = bootstrap_se(batches(values), {"name": "m", "reduce": "mean", "of": "x"}, resamples=500)
    assert se == pytest.approx(values.std(ddof=1) / math.sqrt(values.size), rel=0.15)


# ---------------------------------------------------------------------------------------------- specs


def test_parse_the_documented_specs():
    assert parse_reducer({"name": "kills_per_life", "reduce": "ratio", "of": "kills", "per": "deaths", "floor": 1}) \
        == Reducer("kills_per_life", "ratio", "kills", per="deaths", floor=1.0)
    p90 = parse_reducer({"name": "p90_error", "reduce": "quantile", "of": "abs_rel", "q": 0.9})
    assert (p90.kind, p90.q) == ("quantile", 0.9)
    bad = parse_reducer({"name": "bad_rate", "reduce": "rate_above", "of": "ratio", "threshold": 1.25})
    assert bad.reduce([{"ratio": 1.0}, {"ratio": 1.3}, {"ratio": 1.25}, {"ratio": 2.0}]) == 0.5
    assert isinstance(parse_reducer({"name": "k", "reduce": "ratio", "of": "a", "per": "b", "floor": 1}).floor, float)


def test_spec_round_trip():
    reducers = parse_reducers([
        {"name": "a", "reduce": "cvar", "of": "x", "alpha": 0.1, "higher_is_worse": False},
        {"name": "b", "reduce": "ratio", "of": "kills", "per": "deaths"},
        {"name": "c", "reduce": "mean", "of": "x"},
    ])
    assert parse_reducers([r.as_spec() for r in reducers]) == reducers
    assert reducers[1].as_spec() == {"name": "b", "reduce": "ratio", "of": "kills", "per": "deaths"}


@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "e", "reduce": "p90", "of": "x"}, r"'reduce'.*'p90'.*known: mean, median, quantile, cvar"),
    ({"name": "e", "reduce": "medain", "of": "x"}, r"did you mean 'median'"),
    ({"name": "e", "reduce": "mean"}, r"missing key 'of'"),
    ({"reduce": "mean", "of": "x"}, r"missing key 'name'"),
    ({"name": "e", "of": "x"}, r"missing key 'reduce'"),
    ({"name": "e", "reduce": "quantile", "of": "x", "q": 1.5}, r"'q' must be strictly between 0 and 1"),
    ({"name": "e", "reduce": "quantile", "of": "x", "q": 0}, r"'q' must be strictly between 0 and 1"),
    ({"name": "e", "reduce": "quantile", "of": "x"}, r"needs key 'q'"),
    ({"name": "e", "reduce": "quantile", "of": "x", "q": "0.9"}, r"'q' must be a number"),
    ({"name": "e", "reduce": "quantile", "of": "x", "q": True}, r"'q' must be a number"),
    ({"name": "e", "reduce": "mean", "of": "x", "q": 0.5}, r"'q' does not apply to reduce = 'mean'"),
    ({"name": "e", "reduce": "rate_above", "of": "x", "threshhold": 1}, r"unknown key 'threshhold'.*'threshold'"),
    ({"name": "e", "reduce": "rate_above", "of": "x"}, r"needs key 'threshold'"),
    ({"name": "e", "reduce": "cvar", "of": "x", "alpha": 0.1}, r"needs key 'higher_is_worse'"),
    ({"name": "e", "reduce": "cvar", "of": "x", "alpha": 0, "higher_is_worse": True}, r"'alpha' must be in \(0, 1\]"),
    ({"name": "e", "reduce": "cvar", "of": "x", "alpha": 0.1, "higher_is_worse": 1}, r"'higher_is_worse'.*true or"),
    ({"name": "e", "reduce": "ratio", "of": "x"}, r"needs key 'per'"),
    ({"name": "e", "reduce": "ratio", "of": "x", "per": "y", "floor": 0}, r"'floor' must be positive"),
    ({"name": "e", "reduce": "ratio", "of": "x", "per": ""}, r"'per' must be a non-empty string"),
    ({"name": "", "reduce": "mean", "of": "x"}, r"'name' must be a non-empty string"),
    ({"name": "e", "reduce": "mean", "of": 3}, r"'of' must be a non-empty string"),
])
def test_bad_specs_name_the_key(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_reducer(spec)


def test_spec_errors_say_where():
    with pytest.raises(ConfigError, match=r"^doom\.reducers\[1\]: .*'q'"):
        parse_reducers([{"name": "a", "reduce": "mean", "of": "x"}, {"name": "b", "reduce": "quantile", "of": "x"}],
                       where="doom.reducers")
    with pytest.raises(ConfigError, match=r"^doom\.reducers\[0\] must be a table"):
        parse_reducers(["mean"], where="doom.reducers")
    with pytest.raises(ConfigError, match="must be a list"):
        parse_reducers({"name": "a", "reduce": "mean", "of": "x"})
    with pytest.raises(ConfigError, match="'a'.*unique"):
        parse_reducers([{"name": "a", "reduce": "mean", "of": "x"}, {"name": "a", "reduce": "max", "of": "x"}])


# ---------------------------------------------------------------------------------------------- loss


def test_weighted_sum():
    assert weighted_sum({"a": 2.0, "b": 3.0, "c": 100.0}, {"a": 1.0, "b": -0.5}) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match=r"not reported: kd \(available: a, b\)"):
        weighted_sum({"a": 1.0, "b": 2.0}, {"kd": 1.0})
    with pytest.raises(ConfigError, match="no metric has a weight"):
        weighted_sum({"a": 1.0}, {})
    with pytest.raises(ConfigError, match="'a' must be a number"):
        weighted_sum({"a": 1.0}, {"a": "1"})
    with pytest.raises(ValueError, match="'a' is nan"):
        weighted_sum({"a": math.nan}, {"a": 1.0})


# ---------------------------------------------------------------------------------------------- constraints


@pytest.mark.parametrize(("text", "bound"), [
    ("pass_rate >= baseline - 0.01", Bound(-0.01, "offset")),
    ("pass_rate>=baseline-0.01", Bound(-0.01, "offset")),
    ("pass_rate >= baseline", Bound(0.0, "offset")),
    ("pass_rate >= baseline + 1e-3", Bound(0.001, "offset")),
    ("pass_rate >= baseline * 0.99", Bound(0.99, "factor")),
    ("pass_rate >= 0.7", Bound(0.7)),
    ("pass_rate >= -2", Bound(-2.0)),
])
def test_parse_constraint_bounds(text, bound):
    constraint = parse_constraint(text)
    assert constraint == Constraint("pass_rate", ">=", bound)
    assert parse_constraint(str(constraint)) == constraint


def test_constraint_violations_relative_to_the_baseline():
    slack = parse_constraint("pass_rate >= baseline - 0.01")
    assert slack.violation(0.74, baseline_value=0.745) == 0.0
    assert slack.violation(0.70, baseline_value=0.75) == pytest.approx(0.04)
    scaled = parse_constraint("abs_rel <= baseline * 1.1")
    assert scaled.violation(0.105, baseline_value=0.1) == 0.0
    assert scaled.violation(0.12, baseline_value=0.1) == pytest.approx(0.01)
    absolute = Constraint("speedup", ">=", 2)
    assert absolute.violation(1.5) == pytest.approx(0.5)
    assert absolute.violation(math.inf) == 0.0
    assert absolute.violation(-math.inf) == UNMEASURED_VIOLATION
    assert absolute.violation(math.nan) == UNMEASURED_VIOLATION
    assert slack.violation(math.nan, baseline_value=0.7) == UNMEASURED_VIOLATION
    assert Constraint("pass_rate", ">=", "baseline - 0.01") == slack
    with pytest.raises(ValueError, match="relative to the baseline"):
        slack.violation(0.7)
    with pytest.raises(ValueError, match="baseline's value is nan"):
        slack.violation(0.7, baseline_value=math.nan)


def test_constraint_violations_of_a_metrics_dict():
    constraints = parse_constraints(["pass_rate >= baseline - 0.01", "speedup >= 2"], where="codegen.constraints")
    assert constraint_violations({"pass_rate": 0.70, "speedup": 3.0}, constraints, {"pass_rate": 0.75}) \
        == pytest.approx([0.04, 0.0])
    with pytest.raises(ConfigError, match=r"'speedup' is not reported \(available: pass_rate\)"):
        constraint_violations({"pass_rate": 0.7}, constraints, {"pass_rate": 0.7})
    with pytest.raises(ConfigError, match="baseline, which does not report 'pass_rate'"):
        constraint_violations({"pass_rate": 0.7, "speedup": 3.0}, constraints, {})


@pytest.mark.parametrize(("text", "message"), [
    ("pass_rate > 0.7", r"operator '>' is not supported, use '>=' or '<='"),
    ("pass_rate == 0.7", r"operator '==' is not supported"),
    ("pass_rate >= baseline / 2", r"bound 'baseline / 2' must be a number, 'baseline'"),
    ("pass_rate >= best", r"bound 'best' must be"),
    ("pass_rate >= nan", r"bound must be finite"),
    (">= 0.7", r"expected 'metric >= bound'"),
    ("pass_rate", r"expected 'metric >= bound'"),
    (0.7, r"must be a string"),
])
def test_bad_constraints(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_constraint(text)


def test_bad_constraint_fields_and_where():
    with pytest.raises(ConfigError, match=r"^codegen\.constraints\[1\] 'x < 1'"):
        parse_constraints(["y >= 0", "x < 1"], where="codegen.constraints")
    with pytest.raises(ConfigError, match="op must be"):
        Constraint("x", "=>", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'bound' must be a number"):
        Constraint("x", ">=", None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- several objectives


POINTS = [(1, 2), (2, 1), (1, 2), (2, 2), (1, 3), (3, 0)]


def test_pareto_front_with_ties_and_duplicates():
    # (1, 2) twice: duplicates do not dominate each other; (1, 3) ties on the first objective only
    assert pareto_front(POINTS) == [0, 1, 2, 5]
    assert pareto_front([(5.0,)]) == [0]
    assert pareto_front([(1, 1), (1, 1)]) == [0, 1]
    assert pareto_front([]) == []
    with pytest.raises(ValueError, match="point 1 has a non-finite"):
        pareto_front([(1, 2), (math.nan, 1)])
    with pytest.raises(ValueError, match="same"):
        pareto_front([(1, 2), (1,)])


def test_pick_by_weights():
    assert pick_by_weights(POINTS, [1, 0]) == 0  # first of the ties
    assert pick_by_weights(POINTS, [0, 1]) == 5
    assert pick_by_weights(POINTS, [1, 1]) == 0
    assert pick_by_weights(POINTS, [1, 3]) == 5
    for weights in ([1], [0, 0], [-1, 1], [math.nan, 1]):
        with pytest.raises(ValueError):
            pick_by_weights(POINTS, weights)
    with pytest.raises(ValueError, match="no points"):
        pick_by_weights([], [1])


# ---------------------------------------------------------------------------------------------- properties


@FAST
@given(samples, st.floats(0.01, 0.99))
def test_quantile_lies_between_min_and_max(values, q):
    value = reduce_one("quantile", values, q=q)
    assert min(values) <= value <= max(values)


@FAST
@given(samples, st.floats(0.01, 1.0))
def test_cvar_brackets_the_mean(values, alpha):
    mean = reduce_one("mean", values)
    worst = reduce_one("cvar", values, alpha=alpha, higher_is_worse=True)
    best = reduce_one("cvar", values, alpha=alpha, higher_is_worse=False)
    tolerance = 1e-9 * (1 + max(abs(v) for v in values))
    assert best - tolerance <= mean <= worst + tolerance
    assert min(values) - tolerance <= best and worst <= max(values) + tolerance


@FAST
@given(samples, st.floats(-1e6, 1e6, allow_nan=False))
def test_rates_partition_the_batches(values, threshold):
    above = reduce_one("rate_above", values, threshold=threshold)
    below = reduce_one("rate_below", values, threshold=threshold)
    equal = sum(v == threshold for v in values) / len(values)
    assert above + below + equal == pytest.approx(1.0)


@FAST
@given(st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=20))
def test_geomean_is_at_most_the_mean_and_its_se_is_finite(values):
    assert reduce_one("geomean", values) <= reduce_one("mean", values) * (1 + 1e-9)
    se = Reducer("g", "geomean", "x").standard_error(batches(values))
    assert se is not None and se >= 0


@FAST
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=0, max_size=25))
def test_pareto_front_is_never_dominated(points):
    front = pareto_front(points)

    def dominates(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    for i in front:
        assert not any(dominates(p, points[i]) for p in points)
    for i in set(range(len(points))) - set(front):
        assert any(dominates(points[j], points[i]) for j in front)
    if points:
        assert pick_by_weights(points, [1.0, 2.0]) in front


@FAST
@given(st.lists(st.floats(-100, 100), min_size=2, max_size=15), st.integers(0, 2**32 - 1))
def test_bootstrap_is_deterministic(values, seed):
    reducer = Reducer("m", "median", "x")
    first = reducer.bootstrap_se(batches(values), resamples=50, seed=seed)
    assert first is not None and first >= 0
    assert first == reducer.bootstrap_se(batches(values), resamples=50, seed=seed)
