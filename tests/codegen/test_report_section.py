"""The codegen pack's report section: per-task pass / fail and speed-up on held-out data, the
chart, and a sample before and after, rendered by `retrofit report` for a tiny real run."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from retrofit.cli import main
from retrofit.plugins import load
from retrofit_codegen.report_section import TITLE, grouped, tally

from .helpers import tiny_lm_dir

SMALL = ["--train-per-family", "1", "--validation-per-family", "1", "--validation-samples", "2",
         "--max-new-tokens", "24", "--repeats", "1"]


@pytest.fixture(scope="module")
def codegen_run(tmp_path_factory) -> Path:
    """A finished tiny codegen run (untrained 2-layer GPT-2, 4 evaluations, 22 held-out samples)."""
    root = tmp_path_factory.mktemp("codegen-report")
    assert main(["codegen", "tune", "--model", str(tiny_lm_dir()), *SMALL, "--budget", "4", "--executor", "serial",
                 "--out", str(root / "R"), "--set", "run.validate_every=2"]) == 0
    return root / "R"


def _section(page: str) -> str:
    start = page.index(f"<h2>{TITLE}</h2>")
    return page[start:page.index("</section>", start)]


def test_run_finished_judges_every_held_out_sample_as_the_run_scored_them(codegen_run):
    summary = json.loads((codegen_run / "summary.json").read_text())
    lines = [json.loads(line) for line in (codegen_run / "heldout.jsonl").read_text().splitlines()]
    for model, who in (("unmodified", "baseline"), ("retrofitted", "best")):
        mine = [line for line in lines if line["model"] == model]
        assert len(mine) == 22 and {line["family"] for line in mine} and all(line["family"] for line in mine)
        # the same samples decoded in the same batches: the pass rate the run measured on validation
        assert tally(mine).pass_rate == pytest.approx(summary[who]["validation"]["metrics"]["pass_rate"])
    assert len({(line["task_id"], line["seed"]) for line in lines}) == 22


def test_the_report_of_a_codegen_run_shows_per_task_figures_a_chart_and_a_sample(codegen_run, tmp_path):
    plugins = load()
    assert "retrofit_report_section" in next(i for i in plugins.infos if "codegen" in i.domains).hooks
    assert main(["report", str(codegen_run), "-o", str(tmp_path / "report.html")]) == 0
    section = _section((tmp_path / "report.html").read_text())
    images = re.findall(r"<img[^>]*src=['\"]data:image/png;base64,([^'\"]+)['\"]", section)
    assert len(images) == 1 and base64.b64decode(images[0]).startswith(b"\x89PNG")
    lines = [json.loads(line) for line in (codegen_run / "heldout.jsonl").read_text().splitlines()]
    families = {line["family"] for line in lines}
    assert len(families) == 11 and all(f"<td>{family}</td>" in section for family in families)
    for model in ("unmodified", "retrofitted"):
        overall = tally(line for line in lines if line["model"] == model)
        assert f"{overall.passed}/{overall.samples}" in section
    assert "Per task (11 tasks)" in section  # one held-out task per family, each with its own row
    assert "<strong>unmodified</strong>" in section and "<strong>retrofitted</strong>" in section
    assert "<pre>def " in section  # a sample's code, prompt included


def test_a_run_without_its_held_out_file_says_so_and_is_not_written_into(codegen_run, tmp_path):
    copy = tmp_path / "R"
    shutil.copytree(codegen_run, copy)
    (copy / "heldout.jsonl").unlink()
    before = sorted(p.name for p in copy.iterdir())
    assert main(["report", str(copy), "-o", str(tmp_path / "report.html")]) == 0
    section = _section((tmp_path / "report.html").read_text())
    assert "No held-out comparison yet" in section and "<img" not in section
    assert sorted(p.name for p in copy.iterdir()) == before


def test_tallies_are_pass_counts_and_geometric_means_of_timed_passed_samples():
    lines = [
        {"task_id": "a/0", "family": "a", "model": "unmodified", "status": "passed", "speedup": 2.0},
        {"task_id": "a/0", "family": "a", "model": "unmodified", "status": "passed", "speedup": 8.0},
        {"task_id": "a/1", "family": "a", "model": "unmodified", "status": "failed", "speedup": None},
        {"task_id": "a/1", "family": "a", "model": "retrofitted", "status": "timeout", "speedup": None},
        {"task_id": "b/0", "family": "", "model": "retrofitted", "status": "passed", "speedup": None},
    ]
    groups = grouped(lines, "family")
    assert list(groups) == ["a", "b/0"]  # no family: the task is its own group
    assert groups["a"]["unmodified"].passed == 2 and groups["a"]["unmodified"].samples == 3
    assert groups["a"]["unmodified"].speedup == pytest.approx(4.0)  # sqrt(2 * 8)
    assert groups["a"]["retrofitted"].pass_rate == 0.0 and groups["a"]["retrofitted"].speedup is None
    assert groups["b/0"]["retrofitted"].passed == 1 and groups["b/0"]["retrofitted"].speedup is None  # not timed
    assert groups["b/0"]["unmodified"].samples == 0 and groups["b/0"]["unmodified"].pass_rate == 0.0
    per_task = grouped(lines, "task_id")
    assert per_task["a/0"]["unmodified"].speedup == pytest.approx(math.sqrt(16))
