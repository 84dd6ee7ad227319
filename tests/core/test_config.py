"""Configuration: precedence, TOML files, ``--set`` parsing, and errors that name the key."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from retrofit.config import RUN_FIELDS, Config, RunSettings, parse_assignment, read_toml, resolve
from retrofit.domain import Domain, Option
from retrofit.errors import ConfigError, UsageError
from retrofit.toy import DOMAIN as TOY

# A domain with one option of every kind the schema knows.
DEMO = Domain(
    name="demo",
    help="test domain",
    options=(
        Option("count", 3, "an int"),
        Option("scale", 0.5, "a float"),
        Option("label", "plain", "a string"),
        Option("enabled", False, "a bool"),
        Option("layers", ("a", "b"), "a list"),
        Option("mode", "fast", "a choice", choices=("fast", "slow")),
        Option("anything", None, "no default: any type"),
    ),
    objective={"error": 1.0, "size": -0.5},
    run_defaults={"budget": 42, "top_k": 2},
)

# A domain with default constraints.
GATED = Domain(name="gated", help="test domain", options=(Option("size", 1, "an int"),),
               constraints={"pass_rate": ">= baseline - 0.01", "latency": "<= 2"})


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, f"error messages are one line: {message!r}"
    return message


# -- defaults and precedence --------------------------------------------------------------
def test_core_defaults_then_domain_run_defaults():
    config = resolve(DEMO)
    assert isinstance(config, Config) and config.domain == "demo"
    assert config.run.budget == 42 and config.run.top_k == 2  # the domain's run_defaults
    assert config.run.seed == RunSettings().seed and config.run.executor == RunSettings().executor  # the core's
    assert dict(config.objective) == {"error": 1.0, "size": -0.5}
    assert dict(config.options) == DEMO.defaults()
    assert set(RUN_FIELDS) == set(config.as_toml_dict()["run"])


def test_precedence_core_domain_file_overrides(tmp_path):
    assert resolve(TOY).run.budget == 200 != RunSettings().budget  # toy's run_defaults beat the core's
    file = write(tmp_path, "[run]\nbudget = 50\nseed = 9\n[toy]\ndim = 4\n")
    from_file = resolve(TOY, file)
    assert (from_file.run.budget, from_file.run.seed, from_file.options["dim"]) == (50, 9, 4)
    both = resolve(TOY, file, {"run.budget": 7, "toy.samples": 10})
    assert (both.run.budget, both.run.seed, both.options["dim"], both.options["samples"]) == (7, 9, 4, 10)
    assert both.run.validate_every == 50  # untouched keys keep their defaults


def test_objective_accepts_any_metric_and_the_file_adds_to_the_defaults(tmp_path):
    config = resolve(DEMO, write(tmp_path, "[objective]\nlatency = 2\nerror = 0.25\n"))
    assert dict(config.objective) == {"error": 0.25, "size": -0.5, "latency": 2.0}
    assert isinstance(config.objective["latency"], float)


def test_the_resolved_config_round_trips_through_its_toml(tmp_path):
    import tomli_w

    config = resolve(TOY, None, {"run.budget": 11, "toy.shift": 2, "objective.accuracy": -1})
    path = tmp_path / "resolved.toml"
    path.write_text(tomli_w.dumps(config.as_toml_dict()))
    assert resolve(TOY, path) == config


def test_a_domains_run_defaults_are_checked_like_user_settings():
    typo = Domain(name="typo", help="", run_defaults={"budgte": 10})
    assert "run_defaults of domain typo: unknown key run.budgte (did you mean budget?)" in error_of(typo)
    assert "run.workers must be an integer" in error_of(Domain(name="bad", help="", run_defaults={"workers": "2"}))
    assert resolve(Domain(name="fine", help="", run_defaults={"eval_timeout": 5})).run.eval_timeout == 5.0


def test_a_domains_default_constraints_are_merged_and_overridden_per_key(tmp_path):
    assert dict(resolve(GATED).constraints) == {"pass_rate": ">= baseline - 0.01", "latency": "<= 2"}
    assert dict(resolve(DEMO).constraints) == {}
    config = resolve(GATED, write(tmp_path, '[constraints]\npass_rate = ">= baseline"\nsize = "<= 9"\n'))
    assert dict(config.constraints) == {"pass_rate": ">= baseline", "latency": "<= 2", "size": "<= 9"}
    assert resolve(GATED, None, {"constraints.latency": "<= 5"}).constraints["latency"] == "<= 5"


def test_an_empty_condition_removes_a_default_constraint_and_the_removal_survives_config_toml(tmp_path):
    import tomli_w

    config = resolve(GATED, None, dict([parse_assignment('constraints.pass_rate=""')]))
    assert dict(config.constraints) == {"latency": "<= 2"} and config.removed_constraints == ("pass_rate",)
    written = config.as_toml_dict()["constraints"]
    assert written == {"pass_rate": "", "latency": "<= 2"}
    path = tmp_path / "resolved.toml"
    path.write_text(tomli_w.dumps(config.as_toml_dict()))
    assert resolve(GATED, path) == config  # a resumed run does not get the default back
    # removed in the file, then set again on the command line: a constraint like any other
    again = resolve(GATED, write(tmp_path, '[constraints]\npass_rate = "  "\n'), {"constraints.pass_rate": ">= 0.5"})
    assert again.constraints["pass_rate"] == ">= 0.5" and again.removed_constraints == ()
    # removed twice (file and command line) is still one removal
    twice = resolve(GATED, write(tmp_path, '[constraints]\nlatency = ""\n'), {"constraints.latency": ""})
    assert dict(twice.constraints) == {"pass_rate": ">= baseline - 0.01"} and twice.removed_constraints == ("latency",)


def test_removing_a_constraint_nobody_declared_names_the_ones_there_are(tmp_path):
    message = error_of(GATED, write(tmp_path, '[constraints]\npas_rate = ""\n'))
    assert "constraints.pas_rate" in message and "there is none" in message and "pass_rate, latency" in message
    assert "constraints: none" in error_of(DEMO, None, {"constraints.pass_rate": ""})


def test_a_domains_default_constraints_are_checked():
    bad = Domain(name="bad", help="", constraints={"pass_rate": "> baseline"})
    assert "operator '>' is not supported" in error_of(bad)
    empty = Domain(name="empty", help="", constraints={"pass_rate": ""})
    assert "constraints of domain empty: constraints.pass_rate must be a condition" in error_of(empty)
    assert GATED.problems() == []
    assert [p for p in bad.problems() if "'>' is not supported" in p]
    assert [p for p in empty.problems() if "must be a condition" in p]
    assert [p for p in Domain(name="n", help="", constraints={"pass rate": ">= 1"}).problems()
            if "expected 'metric >= bound'" in p]


def test_resolved_workers():
    assert resolve(TOY, None, {"run.workers": 3}).run.resolved_workers() == 3
    assert resolve(TOY, None, {"run.workers": 3, "run.executor": "serial"}).run.resolved_workers() == 1
    assert resolve(TOY).run.resolved_workers() >= 1  # 0 means one per core


# -- types --------------------------------------------------------------------------------
def test_ints_are_accepted_for_floats():
    config = resolve(DEMO, None, {"demo.scale": 2, "run.eval_timeout": 3})
    assert config.options["scale"] == 2.0 and isinstance(config.options["scale"], float)
    assert isinstance(config.run.eval_timeout, float)


def test_lists_are_accepted_for_tuples_and_none_defaults_take_anything():
    config = resolve(DEMO, None, {"demo.layers": ["x"], "demo.anything": {"nested": [1, 2]}})
    assert config.options["layers"] == ("x",)
    assert config.options["anything"] == {"nested": [1, 2]}


@pytest.mark.parametrize(("key", "value", "expected", "got"), [
    ("run.budget", 2.5, "an integer", "a number"),
    ("run.budget", "ten", "an integer", "a string"),
    ("run.budget", True, "an integer", "a boolean"),  # bools are not ints here
    ("demo.count", False, "an integer", "a boolean"),
    ("demo.scale", True, "a number", "a boolean"),
    ("demo.scale", "1.5", "a number", "a string"),
    ("demo.enabled", 1, "true or false", "an integer"),
    ("demo.label", 3, "a string", "an integer"),
    ("demo.layers", "a,b", "a list", "a string"),
])
def test_wrong_types_name_the_key_and_both_types(key, value, expected, got):
    message = error_of(DEMO, None, {key: value})
    assert key in message and f"must be {expected}" in message and f"got {got}" in message


def test_a_wrong_type_in_a_file_names_the_file(tmp_path):
    path = write(tmp_path, "[demo]\ncount = \"three\"\n")
    message = error_of(DEMO, path)
    assert str(path) in message and "demo.count" in message and "an integer" in message


def test_a_string_option_hints_at_quoting_a_value_toml_read_as_something_else():
    key, value = parse_assignment("toy.fault=nan")  # TOML reads nan as a float
    assert math.isnan(value)
    message = error_of(TOY, None, {key: value})
    assert "toy.fault" in message and "quote" in message and """--set 'toy.fault="nan"'""" in message
    assert resolve(TOY, None, dict([parse_assignment('toy.fault="nan"')])).options["fault"] == "nan"


@pytest.mark.parametrize("weight", [True, "heavy", [1.0], float("nan"), float("inf")])
def test_objective_weights_must_be_finite_numbers(weight):
    message = error_of(TOY, None, {"objective.error_rate": weight})
    assert "objective.error_rate" in message and "finite number" in message


# -- unknown names ------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "suggestion"), [
    ("run.budgte", "budget"),
    ("run.worker", "workers"),
    ("toy.dims", "dim"),
    ("toy.fualt", "fault"),
])
def test_unknown_keys_are_named_with_the_close_one(key, suggestion):
    message = error_of(TOY, None, {key: 1})
    assert f"unknown key {key}" in message and f"did you mean {suggestion}?" in message


def test_unknown_sections_are_named_with_the_close_one(tmp_path):
    message = error_of(TOY, write(tmp_path, "[rnu]\nbudget = 3\n"))
    assert "[rnu]" in message and "did you mean run?" in message
    message = error_of(TOY, None, {"tyo.dim": 3})
    assert "[tyo]" in message and "did you mean toy?" in message
    # another domain's section is unknown for this one
    message = error_of(TOY, write(tmp_path, "[depth]\nthreshold = 1.25\n", "other.toml"))
    assert "[depth]" in message and "toy" in message


def test_nothing_close_means_no_suggestion():
    message = error_of(TOY, None, {"run.zzzzzzzz": 1})
    assert "run.zzzzzzzz" in message and "did you mean" not in message


def test_names_with_control_characters_stay_on_one_line(tmp_path):
    assert "'ru\\nn'" in error_of(TOY, None, {"ru\nn.budget": 1})  # found by the fuzz test below
    assert "'bud\\nget'" in error_of(TOY, None, {"run.bud\nget": 1})
    error_of(TOY, write(tmp_path, '["a\\nb"]\nx = 1\n'))


def test_a_section_must_be_a_table(tmp_path):
    message = error_of(TOY, write(tmp_path, "run = 3\n"))
    assert "[run] must be a table" in message


def test_an_override_without_a_section():
    assert "section.key" in error_of(TOY, None, {"budget": 3})


# -- files --------------------------------------------------------------------------------
def test_bad_toml_is_one_line_naming_the_file(tmp_path):
    path = write(tmp_path, "[run]\nbudget = = 3\nmore = [\n")
    message = error_of(TOY, path)
    assert str(path) in message and "not valid TOML" in message and "line 2" in message


def test_missing_file(tmp_path):
    message = error_of(TOY, tmp_path / "nope.toml")
    assert "not found" in message and "nope.toml" in message


def test_a_directory_or_binary_file_is_a_config_error(tmp_path):
    assert "cannot read" in error_of(TOY, tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00[run]")
    error_of(TOY, binary)


def test_read_toml_gives_the_tables(tmp_path):
    assert read_toml(write(tmp_path, "[run]\nbudget = 3\n")) == {"run": {"budget": 3}}


# -- choices and ranges -------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value", "choices"), [
    ("run.executor", "ray", "serial, local, dask"),
    ("run.selection", "best", "validation, train"),
    ("run.tell_order", "random", "ask, completion"),
    ("toy.fault", "meltdown", "none, nan, raise, exit, segfault, oom, hang"),
])
def test_values_outside_their_choices(key, value, choices):
    message = error_of(TOY, None, {key: value})
    assert key in message and f"must be one of {choices}" in message and repr(value) in message


def test_choices_of_a_plugin_domain():
    assert "demo.mode must be one of fast, slow" in error_of(DEMO, None, {"demo.mode": "medium"})
    assert resolve(DEMO, None, {"demo.mode": "slow"}).options["mode"] == "slow"


@pytest.mark.parametrize(("key", "value", "words"), [
    ("run.budget", 0, "at least 1"),
    ("run.budget", -5, "at least 1"),
    ("run.validate_every", 0, "at least 1"),
    ("run.top_k", 0, "at least 1"),
    ("run.workers", -1, "0 (one per core) or more"),
    ("run.eval_timeout", -1.0, "0 (none) or positive"),
    ("run.eval_timeout", float("nan"), "0 (none) or positive"),
])
def test_out_of_range_run_settings(key, value, words):
    message = error_of(TOY, None, {key: value})
    assert key in message and words in message


def test_config_errors_are_usage_errors():
    assert issubclass(ConfigError, UsageError)


# -- --set parsing ------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "key", "value"), [
    ("run.budget=5", "run.budget", 5),
    ("toy.shift=1.5", "toy.shift", 1.5),
    ("toy.shift=1e-3", "toy.shift", 0.001),
    ("demo.enabled=true", "demo.enabled", True),
    ("demo.layers=[\"x\", \"y\"]", "demo.layers", ["x", "y"]),
    ('toy.fault="raise"', "toy.fault", "raise"),
    ("run.optimizer=CMA", "run.optimizer", "CMA"),  # not TOML: kept as a string
    ("run.optimizer=TwoPointsDE", "run.optimizer", "TwoPointsDE"),
    ("run.scheduler=tcp://10.0.0.1:8786", "run.scheduler", "tcp://10.0.0.1:8786"),
    ("run.runs_dir=/tmp/a b", "run.runs_dir", "/tmp/a b"),
    ("run.seed=1=2", "run.seed", "1=2"),  # split at the first '='
    ("run.runs_dir=", "run.runs_dir", ""),
    ("  run.budget = 5", "run.budget", 5),
])
def test_set_values_are_toml_else_strings(text, key, value):
    assert parse_assignment(text) == (key, value)


@pytest.mark.parametrize("text", ["run.budget", "=5", " =5", ""])
def test_set_needs_a_key_and_an_equals_sign(text):
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_assignment(text)


def test_set_values_flow_into_resolve():
    overrides = dict(parse_assignment(t) for t in ["run.budget=9", "run.optimizer=CMA", "toy.shift=2"])
    config = resolve(TOY, None, overrides)
    assert (config.run.budget, config.run.optimizer, config.options["shift"]) == (9, "CMA", 2.0)
    with pytest.raises(ConfigError, match="run.budget must be an integer"):
        resolve(TOY, None, dict([parse_assignment("run.budget=lots")]))


# -- fuzz: resolve either succeeds or raises ConfigError, nothing else ---------------------
_NAMES = st.sampled_from(["run", "objective", "constraints", "toy", "demo", "budget", "workers", "executor", "seed",
                          "dim", "shift", "fault", "count", "scale", "label", "enabled", "layers", "mode", "anything",
                          "eval_timeout", "top_k", "error_rate", "x", "pass_rate", "latency"]) | st.text(max_size=8)
_SCALARS = (st.integers(min_value=-2**63, max_value=2**63 - 1) | st.floats() | st.booleans() | st.text(max_size=10)
            | st.sampled_from(["local", "serial", "dask", "nan", "none", "raise", "fast", "slow", ">= baseline - 0.01",
                              "<= 0.5", ">= baseline", "< baseline * 2", "== 3", ">= nan", ""])
            | st.dates() | st.datetimes() | st.times())
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(_NAMES, inner, max_size=3), max_leaves=8)
_TABLES = st.dictionaries(_NAMES, st.dictionaries(_NAMES, _VALUES, max_size=4) | _VALUES, max_size=4)
_DOTTED = st.dictionaries(st.builds(lambda a, b, dot: f"{a}.{b}" if dot else a, _NAMES, _NAMES, st.booleans()),
                          _VALUES, max_size=4)
_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


def _only_config_errors(call) -> Config | None:
    try:
        return call()
    except ConfigError as error:
        assert str(error) and "\n" not in str(error)
        return None


@_FUZZ
@given(tables=_TABLES, overrides=_DOTTED, domain=st.sampled_from([TOY, DEMO, GATED]))
def test_fuzz_nested_values_only_raise_config_error(tmp_path, tables, overrides, domain):
    import tomli_w

    path = tmp_path / "fuzz.toml"
    try:
        path.write_text(tomli_w.dumps(tables), encoding="utf-8")
    except (TypeError, ValueError):  # not representable in TOML (a non-table at top level, ...)
        path = None
    config = _only_config_errors(lambda: resolve(domain, path, overrides))
    if config is not None:  # what resolve accepts is a valid configuration
        assert config.run.budget >= 1 and config.run.workers >= 0
        assert all(math.isfinite(w) for w in config.objective.values())
        assert set(config.options) == set(domain.defaults())


@_FUZZ
@given(text=st.text(max_size=200) | st.builds(lambda a, b: f"[{a}]\n{b}", _NAMES, st.text(max_size=100)))
def test_fuzz_arbitrary_text_as_a_config_file_only_raises_config_error(tmp_path, text):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _only_config_errors(lambda: resolve(TOY, path))


@_FUZZ
@given(text=st.text(max_size=60))
def test_fuzz_set_assignments_only_raise_config_error(text):
    def attempt():
        key, value = parse_assignment(text)
        return resolve(TOY, None, {key: value})

    _only_config_errors(attempt)


def test_fuzz_strategies_reach_both_outcomes(tmp_path):
    """Guard against a vacuous fuzz test: the strategies produce accepted and rejected configs."""
    assert _only_config_errors(lambda: resolve(TOY, None, {"run.budget": 3})) is not None
    assert _only_config_errors(lambda: resolve(TOY, None, {"run.budget": "x"})) is None
    assert tomllib.loads("[run]\nbudget = 3\n")  # the TOML reader is the standard library's
