"""The command line as a user runs it: a separate process, exit codes, files, Ctrl-C and resume."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from conftest import cli, history, summary
from retrofit import Domain, hookimpl

DOMAINS = ("toy", "depth", "doom", "codegen")


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a usage error: one line, no traceback."""
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("retrofit: error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def toy_run_dir(tmp_path_factory) -> Path:
    """One finished ``toy tune`` run, shared by the tests that read a run directory."""
    cwd = tmp_path_factory.mktemp("cli")
    done = cli("toy", "tune", "--budget", "20", "--workers", "1", "--out", "R", cwd=cwd, check=0)
    assert "run directory: R" in done.stderr
    assert "baseline" in done.stdout  # the summary table goes to stdout
    return cwd / "R"


# -- start-up -----------------------------------------------------------------------------
def test_version(tmp_path):
    done = cli("--version", cwd=tmp_path, check=0)
    assert done.stdout.strip() == f"retrofit, version {metadata.version('retrofit-core')}"


def test_help_lists_every_domain_and_the_core_commands(tmp_path):
    done = cli("--help", cwd=tmp_path, check=0)
    commands = {line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert set(DOMAINS) | {"plugins", "report", "optimizers"} <= commands
    done = cli("toy", "tune", "--help", cwd=tmp_path, check=0)
    for flag in ("--budget", "--workers", "--executor", "--optimizer", "--seed", "--out", "--resume", "--config",
                 "--set", "--dim", "--fault"):  # core flags and the domain's own options
        assert flag in done.stdout


def test_building_the_cli_imports_neither_torch_nor_nevergrad_nor_matplotlib(tmp_path):
    code = ("import sys, retrofit.cli, retrofit.plugins\n"
            "retrofit.cli.build(retrofit.plugins.load())\n"
            "print(sorted({'torch', 'nevergrad', 'matplotlib'} & {m.split('.')[0] for m in sys.modules}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    # and the real command, through main(): every module imported, per -X importtime
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "retrofit", "--help"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "retrofit" in imported and "click" in imported  # the check can see imports
    assert not {"torch", "nevergrad", "scipy", "pandas", "matplotlib"} & imported


def test_help_starts_fast(tmp_path):
    """Only reported (machines differ): ``--help`` against a bare interpreter start."""

    def median(*args: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], capture_output=True, cwd=tmp_path, timeout=120, check=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    bare, help_ = median("-c", "pass"), median("-m", "retrofit", "--help")
    print(f"\n`retrofit --help`: median {help_:.3f} s; `python -c pass`: {bare:.3f} s; "
          f"ratio {help_ / bare:.1f}x")


def test_plugins_json_lists_domains_and_hooks(tmp_path):
    rows = json.loads(cli("plugins", "--json", cwd=tmp_path, check=0).stdout)
    assert all(set(row) == {"name", "distribution", "version", "status", "domains", "hooks", "error"} for row in rows)
    by_domain = {domain: row for row in rows for domain in row["domains"]}
    assert set(DOMAINS) <= set(by_domain)
    assert by_domain["toy"]["distribution"] == "retrofit-core"
    assert by_domain["depth"]["distribution"] == "retrofit-depth-midas"
    assert {"retrofit_load_model", "retrofit_evaluate", "retrofit_batches"} <= set(by_domain["toy"]["hooks"])
    assert {"retrofit_load_model", "retrofit_evaluate", "retrofit_aggregate"} <= set(by_domain["doom"]["hooks"])
    assert {row["name"]: row["hooks"] for row in rows}["objective"] == ["retrofit_aggregate"]
    table = cli("plugins", cwd=tmp_path, check=0).stdout  # rich shortens cells to the width
    assert "retrofit plugins" in table and "depth" in table and "register_domains" in table


def test_optimizers_lists_auto_and_nevergrad_names(tmp_path):
    names = cli("optimizers", cwd=tmp_path, check=0).stdout.split()
    assert names[0] == "auto" and "TwoPointsDE" in names and "NGOpt" in names


# -- usage errors: exit 2, one line -------------------------------------------------------
def test_unknown_domain_and_unknown_option_exit_2(tmp_path):
    done = cli("nope", "tune", cwd=tmp_path)
    assert done.returncode == 2 and "No such command 'nope'" in done.stderr
    done = cli("toy", "tune", "--bogus", cwd=tmp_path)
    assert done.returncode == 2 and "No such option '--bogus'" in done.stderr
    done = cli("toy", "tune", "--executor", "cluster", cwd=tmp_path)
    assert done.returncode == 2 and "cluster" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_malformed_toml_config_is_one_line(tmp_path):
    (tmp_path / "bad.toml").write_text("[run]\nbudget = = 3\n")
    line = one_error_line(cli("toy", "tune", "--config", "bad.toml", cwd=tmp_path))
    assert "bad.toml" in line and "not valid TOML" in line
    line = one_error_line(cli("toy", "tune", "--config", "missing.toml", cwd=tmp_path))
    assert "not found" in line


def test_wrong_types_and_unknown_keys_exit_2(tmp_path):
    line = one_error_line(cli("toy", "tune", "--set", "run.budget=lots", cwd=tmp_path))
    assert "run.budget must be an integer" in line
    (tmp_path / "typo.toml").write_text("[toy]\ndims = 3\n")
    line = one_error_line(cli("toy", "evaluate", "--config", "typo.toml", cwd=tmp_path))
    assert "toy.dims" in line and "did you mean dim?" in line
    line = one_error_line(cli("toy", "tune", "--budget", "0", cwd=tmp_path))
    assert "run.budget must be at least 1" in line
    assert not (tmp_path / "runs").exists()


class _Skeleton:
    """A plugin that declares a domain and nothing else, as a pack does on its first day."""

    @hookimpl
    def retrofit_register_domains(self, register):
        register(Domain(name="skeleton", help="declared, not built"))


def test_a_domain_that_is_not_built_says_what_is_missing(tmp_path, monkeypatch, capsys):
    from retrofit import cli as cli_module
    from retrofit.plugins import load

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_module, "load", lambda: load(extra=[_Skeleton()], environ={}))
    assert cli_module.main(["skeleton", "tune", "--budget", "5", "--workers", "1"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("retrofit: error:")]
    assert len(lines) == 1
    assert "retrofit_load_model" in lines[0] and "'skeleton'" in lines[0] and "not built" in lines[0]
    assert not list((tmp_path / "runs").glob("*")), "a run that never started leaves no run directory"


def test_debug_shows_the_traceback(tmp_path):
    done = cli("--debug", "doom", "evaluate", "--model", str(tmp_path / "missing.pt"), cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr and "retrofit_load_model" in done.stderr


# -- a tuning run and what reads it -------------------------------------------------------
def test_tune_writes_the_run_record(toy_run_dir):
    assert {"config.toml", "history.jsonl", "validation.jsonl", "summary.json"} <= {
        p.name for p in toy_run_dir.iterdir()}
    result = summary(toy_run_dir)
    assert result["status"] == "finished" and result["domain"] == "toy"
    assert result["evaluations"] == 20 == len(history(toy_run_dir)) and result["budget"] == 20
    assert result["workers"] == 1 and result["executor"] == "local"
    config = tomllib.loads((toy_run_dir / "config.toml").read_text())
    assert config["run"]["budget"] == 20 and config["run"]["workers"] == 1 and "toy" in config
    assert result["best"]["validation"]["loss"] <= result["baseline"]["validation"]["loss"]


def test_out_on_a_non_empty_directory_exits_2(toy_run_dir):
    line = one_error_line(cli("toy", "tune", "--out", "R", cwd=toy_run_dir.parent))
    assert "not empty" in line and "--resume" in line
    assert summary(toy_run_dir)["evaluations"] == 20  # untouched


def test_resume_refuses_other_options(toy_run_dir):
    line = one_error_line(cli("toy", "tune", "--resume", "R", "--budget", "30", cwd=toy_run_dir.parent))
    assert "--resume" in line and "drop the other options" in line
    one_error_line(cli("toy", "tune", "--resume", "R", "--set", "run.seed=3", cwd=toy_run_dir.parent))
    line = one_error_line(cli("toy", "tune", "--resume", "nowhere", cwd=toy_run_dir.parent))
    assert "not a retrofit run directory" in line


def test_evaluate_the_baseline_and_a_run_directory(toy_run_dir):
    cwd, result = toy_run_dir.parent, summary(toy_run_dir)
    baseline = json.loads(cli("toy", "evaluate", "--json", cwd=cwd, check=0).stdout)
    assert set(baseline) == {"train", "validation"}
    for split in ("train", "validation"):
        assert baseline[split]["loss"] == result["baseline"][split]["loss"]
        assert {"error_rate", "accuracy"} <= set(baseline[split]["metrics"])
    best = json.loads(cli("toy", "evaluate", "--params", "R", "--split", "validation", "--json", cwd=cwd,
                          check=0).stdout)
    assert set(best) == {"validation"} and best["validation"]["loss"] == result["best"]["validation"]["loss"]
    table = cli("toy", "evaluate", "--params", "R", cwd=cwd, check=0).stdout
    assert "error_rate" in table and "validation" in table


def test_evaluate_rejects_parameters_that_do_not_fit(toy_run_dir, tmp_path):
    wrong_name = tmp_path / "wrong.json"
    wrong_name.write_text(json.dumps({"format": "retrofit-delta/1", "domain": "toy", "knobs": [],
                                      "values": {"coefficients": [1.0] * 8}}))
    line = one_error_line(cli("toy", "evaluate", "--params", str(wrong_name), cwd=tmp_path))
    assert "do not match" in line and "gains" in line
    wrong_size = tmp_path / "short.json"
    wrong_size.write_text(json.dumps({"format": "retrofit-delta/1", "domain": "toy", "knobs": [],
                                      "values": {"gains": [1.0, 2.0]}}))
    assert "expected 8 values, got 2" in one_error_line(cli("toy", "evaluate", "--params", str(wrong_size),
                                                            cwd=tmp_path))
    (tmp_path / "junk.json").write_text("{not json")
    one_error_line(cli("toy", "evaluate", "--params", "junk.json", cwd=tmp_path))
    assert "not found" in one_error_line(cli("toy", "evaluate", "--params", "absent.json", cwd=tmp_path))
    # the same run is fine with another dimension of the problem? no: the knobs no longer fit
    one_error_line(cli("toy", "evaluate", "--params", str(toy_run_dir), "--dim", "4", cwd=tmp_path))


def test_export_writes_the_delta_and_says_no_checkpoint_writer(toy_run_dir, tmp_path):
    done = cli("toy", "export", str(toy_run_dir), "--output", "out/OUT.json", cwd=tmp_path, check=0)
    delta_file = tmp_path / "out" / "OUT.json.delta.json"
    assert f"wrote {Path('out/OUT.json.delta.json')}" in done.stdout
    assert "no plugin writes toy checkpoints" in done.stdout
    assert not (tmp_path / "out" / "OUT.json").exists()
    delta = json.loads(delta_file.read_text())
    assert delta["format"] == "retrofit-delta/1" and delta["domain"] == "toy"
    assert [k["name"] for k in delta["knobs"]] == ["gains"] and delta["knobs"][0]["size"] == 8
    assert delta["values"] == summary(toy_run_dir)["best"]["values"]
    # the delta file is a valid --params
    again = json.loads(cli("toy", "evaluate", "--params", str(delta_file), "--json", cwd=tmp_path, check=0).stdout)
    assert again["validation"]["loss"] == summary(toy_run_dir)["best"]["validation"]["loss"]
    line = one_error_line(cli("toy", "export", str(tmp_path), "--output", "x.json", cwd=tmp_path))
    assert "not a retrofit run directory" in line


def test_report_writes_html_with_the_summary_figures(toy_run_dir, tmp_path):
    done = cli("report", str(toy_run_dir), cwd=tmp_path, check=0)
    page = (toy_run_dir / "report.html").read_text()
    assert "report.html" in done.stdout and page.startswith("<!doctype html>")
    result = summary(toy_run_dir)
    assert "status: finished" in page
    for who in ("baseline", "best"):
        for split in ("train", "validation"):
            assert f"{result[who][split]['loss']:.6g}" in page
    assert page.count("<tr>") >= 20  # one row per evaluation at least
    assert "http://" not in page and "https://" not in page and "<script src" not in page  # self-contained
    other = tmp_path / "elsewhere.html"
    cli("report", str(toy_run_dir), "--output", str(other), cwd=tmp_path, check=0)
    assert other.read_text() == page
    assert "not a retrofit run directory" in one_error_line(cli("report", str(tmp_path), cwd=tmp_path))


# -- Ctrl-C and resume --------------------------------------------------------------------
def test_ctrl_c_exits_130_and_resume_finishes_the_budget(tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    command = [sys.executable, "-m", "retrofit", "toy", "tune", "--set", "toy.delay=0.05", "--budget", "200",
               "--workers", "1", "--out", "R",
               # one batch per split keeps the test short: 200 x 0.05 s of evaluation
               "--set", "toy.train_batches=1", "--set", "toy.validation_batches=1"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    run_dir = tmp_path / "R"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            lines = (run_dir / "history.jsonl").read_text().count("\n") if (run_dir / "history.jsonl").exists() else 0
            if lines >= 5:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be interrupted"
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr
    assert "--resume R" in stderr and "Traceback" not in stderr
    interrupted = summary(run_dir)
    assert interrupted["status"] == "interrupted"
    done_before = [entry["id"] for entry in history(run_dir)]
    assert 5 <= len(done_before) < 200 and len(set(done_before)) == len(done_before)
    assert interrupted["evaluations"] == len(done_before)
    assert "interrupted" in (cli("report", "R", cwd=tmp_path, check=0) and (run_dir / "report.html").read_text())

    cli("toy", "tune", "--resume", "R", cwd=tmp_path, check=0)
    ids = [entry["id"] for entry in history(run_dir)]
    assert len(ids) == 200 and set(ids) == set(range(200))
    assert ids[:len(done_before)] == done_before  # nothing recorded was run again
    final = summary(run_dir)
    assert final["status"] == "finished" and final["evaluations"] == 200
    assert final["best"]["validation"]["loss"] <= final["baseline"]["validation"]["loss"]
