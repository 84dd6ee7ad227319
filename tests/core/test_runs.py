"""``retrofit runs`` and ``retrofit compare``: reading many run directories, tolerant of
running, interrupted and corrupt ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from retrofit.cli import main
from retrofit.runs import compare, list_runs, read_run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """runs/a (CMA-chosen, finished) and runs/b (another seed, made to look interrupted)."""
    parent = tmp_path_factory.mktemp("runs") / "runs"
    for name, seed in (("a", 0), ("b", 1)):
        assert main(["toy", "tune", "--budget", "20", "--executor", "serial", "--seed", str(seed),
                     "--out", str(parent / name), "--set", "run.validate_every=10"]) == 0
    summary = json.loads((parent / "b" / "summary.json").read_text())
    (parent / "b" / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    os.utime(parent / "a" / "config.toml", (1_000_000_000, 1_000_000_000))  # a is the older run
    (parent / "not-a-run").mkdir()
    (parent / "corrupt").mkdir()
    (parent / "corrupt" / "config.toml").write_text("this is = = not toml")
    return parent


def test_list_runs_reads_every_run_oldest_first_and_skips_the_rest(two_runs):
    views = list_runs(two_runs)
    assert [v.path.name for v in views] == ["a", "b"]
    first = views[0].figures()
    summary = json.loads((two_runs / "a" / "summary.json").read_text())
    assert first["domain"] == "toy" and first["status"] == "finished" and first["evaluations"] == 20
    assert first["baseline_validation_loss"] == summary["baseline"]["validation"]["loss"]
    assert first["chosen_validation_loss"] == summary["best"]["validation"]["loss"]
    assert first["improvement"] == summary["improvement"]["validation_loss_relative"]
    assert first["started"].startswith("2001-09-")
    assert views[1].status == "interrupted" and not views[1].complete
    assert [v.path.name for v in list_runs(two_runs / "a")] == ["a"]  # a run directory itself


def test_runs_command_prints_a_table_and_json(two_runs, capsys, monkeypatch):
    assert main(["runs", str(two_runs)]) == 0
    table = capsys.readouterr().out
    assert "retrofit runs (2)" in table and "interrupted" in table and "finished" in table and "20/20" in table
    assert main(["runs", str(two_runs), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in rows] == ["a", "b"] and rows[0]["path"] == str(two_runs / "a")
    monkeypatch.chdir(two_runs.parent)  # the default directory is run.runs_dir, "runs"
    assert main(["runs", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["runs", str(two_runs / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_compare_puts_two_runs_side_by_side(two_runs, tmp_path, capsys):
    a, b = read_run(two_runs / "a"), read_run(two_runs / "b")
    rows = {label: (x, y) for label, x, y in compare(a, b)}
    assert rows["status"] == ("finished", "interrupted") and rows["seed" if "seed" in rows else "domain"]
    assert rows["chosen validation loss"] == (a.summary["best"]["validation"]["loss"],
                                              b.summary["best"]["validation"]["loss"])
    assert "error_rate (chosen validation)" in rows and rows["knobs"] == ("gains (8)", "gains (8)")
    page = tmp_path / "compare.html"
    assert main(["compare", str(two_runs / "a"), str(two_runs / "b"), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "chosen validation loss" in out and f"wrote {page}" in out
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 2 and "interrupted" in html and "https://" not in html
    assert main(["compare", str(two_runs / "a"), str(two_runs / "not-a-run")]) == 2
    assert "not a retrofit run directory" in capsys.readouterr().err
