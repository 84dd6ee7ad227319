"""``retrofit report``: what the page holds, for finished, interrupted and running runs, and
how plugins add sections through ``retrofit_report_section``."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from retrofit import ReportImage, ReportSection, hookimpl
from retrofit.cli import main
from retrofit.engine import Interrupted, Progress, Run
from retrofit.plugins import load
from retrofit.report import render, write_report
from retrofit.runs import read_run

PNG = b"\x89PNG\r\n\x1a\n"


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r"src='data:image/png;base64,([^']+)'", page)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished toy run with failures and three checkpoints."""
    run_dir = tmp_path_factory.mktemp("report") / "R"
    assert main(["toy", "tune", "--budget", "30", "--executor", "serial", "--out", str(run_dir), "--set",
                 "run.validate_every=10", "--set", "toy.fault=raise", "--set", "toy.fault_rate=0.2"]) == 0
    return run_dir


def test_the_page_holds_every_figure_and_is_self_contained(finished, tmp_path):
    output, view = write_report(finished, tmp_path / "out" / "page.html")
    page = output.read_text()
    summary = json.loads((finished / "summary.json").read_text())
    assert view.complete and "status: finished" in page and "figures so far" not in page
    for who in ("baseline", "best"):
        for split in ("train", "validation"):
            assert f"{summary[who][split]['loss']:.6g}" in page
    assert f"{100 * summary['improvement']['validation_loss_relative']:+.2f} %" in page
    assert summary["optimizer"]["used"] in page and " → ".join(summary["optimizer"]["chain"]) in page
    for title in ("Baseline vs chosen result", "Loss over the run", "Train vs validation",
                  "Knobs of the chosen candidate", "Failures by reason", "Time", "Evaluations"):
        assert f"<h2>{title}</h2>" in page
    assert "RuntimeError: injected fault" in page  # failures by reason
    assert "gap: validation − train loss" in page and "overhead" in page
    images = _images(page)
    assert len(images) == 5 and all(image.startswith(PNG) and len(image) > 2000 for image in images)
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//)", page) and "<script" not in page
    # knob table: the chosen gains and their largest change from the identity (all ones)
    chosen = summary["best"]["values"]["gains"]
    assert f"{max(abs(v - 1.0) for v in chosen):.6g}" in page


def test_render_needs_results(tmp_path):
    from retrofit.config import resolve
    from retrofit.records import RunRecord
    from retrofit.toy import DOMAIN

    record = RunRecord.create(resolve(DOMAIN), tmp_path / "empty")
    with pytest.raises(Exception, match="has no results yet"):
        render(read_run(record.path))


def test_an_interrupted_run_is_reported_and_says_so(tmp_path, capsys):
    from retrofit import executors
    from retrofit.config import resolve
    from retrofit.records import RunRecord
    from retrofit.toy import DOMAIN

    config = resolve(DOMAIN, None, {"run.executor": "serial", "run.budget": 60, "run.validate_every": 10})
    record = RunRecord.create(config, tmp_path / "R")

    def stop_at(done: int, best: float | None) -> None:
        if done == 25:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of a run

    with pytest.raises(Interrupted):
        Run(config, DOMAIN, executors.create(config), record, Progress(on_result=stop_at)).execute()
    assert json.loads((record.path / "summary.json").read_text())["status"] == "interrupted"
    assert main(["report", str(record.path)]) == 0
    captured = capsys.readouterr()
    assert "is not finished (status interrupted)" in captured.err
    page = (record.path / "report.html").read_text()
    assert "status: interrupted" in page and "--resume" in page and "25 of 60" in page
    assert len(_images(page)) == 4  # no failures: loss, gap, knobs, time


def test_a_run_without_summary_is_built_from_its_history_alone(finished, tmp_path):
    """A run killed before its first checkpoint, or still going: no summary.json, a torn last line."""
    run_dir = tmp_path / "R"
    run_dir.mkdir()
    (run_dir / "config.toml").write_bytes((finished / "config.toml").read_bytes())
    lines = (finished / "history.jsonl").read_text().splitlines(keepends=True)[:12]
    torn = "".join(lines) + lines[12 - 1][:30]  # a line being written right now
    (run_dir / "history.jsonl").write_text(torn)
    validation = [json.loads(line) for line in (finished / "validation.jsonl").read_text().splitlines()]
    (run_dir / "validation.jsonl").write_text("".join(json.dumps(v) + "\n" for v in validation if v["id"] < 12))
    view = read_run(run_dir)
    assert not view.has_summary and view.status == "running" and len(view.history) == 12
    best = view.summary["best"]
    assert best["id"] is not None and best["values"] and view.summary["evaluations"] == 12
    output, _ = write_report(run_dir)
    page = output.read_text()
    assert "status: running" in page and "no summary.json yet" in page and "figures built from history.jsonl" in page
    assert (run_dir / "history.jsonl").read_text() == torn  # a live run's file is never truncated by a reader
    assert len(_images(page)) >= 3


# -- plugin sections --------------------------------------------------------------------------
class SectionPlugin:
    """Answers for the toy domain with one good section and a list of two; None for others."""

    @hookimpl
    def retrofit_report_section(self, domain: str, run_dir: Path, summary: Any, config: Any) -> Any:
        if domain != "toy":
            return None
        assert (run_dir / "config.toml").is_file() and config.domain == "toy" and summary["domain"] == "toy"
        return [ReportSection("Toy pictures", "<p>one &amp; only</p>", [ReportImage(PNG + b"rest", "a caption")]),
                ReportSection("Toy notes", f"<p>dim {config.options['dim']}</p>")]


class OtherDomainPlugin:
    @hookimpl
    def retrofit_report_section(self, domain: str) -> Any:
        return None if domain != "elsewhere" else ReportSection("never", "<p>never</p>")


class BrokenPlugin:
    @hookimpl
    def retrofit_report_section(self, domain: str) -> Any:
        raise ValueError("boom")


class BadSectionsPlugin:
    @hookimpl
    def retrofit_report_section(self, domain: str) -> Any:
        return [ReportSection("External", "<img src='https://example.org/x.png'>"),
                ReportSection("Not an image", "", [ReportImage(b"plain text")]), "not a section"]


def test_plugins_add_sections_and_a_failing_one_costs_a_warning_only(finished, tmp_path, capsys):
    plugins = load(extra=[SectionPlugin(), OtherDomainPlugin(), BrokenPlugin(), BadSectionsPlugin()])
    page = render(read_run(finished), plugins)
    assert "<h2>Toy pictures</h2><p>one &amp; only</p>" in page and "<h2>Toy notes</h2><p>dim 8</p>" in page
    assert base64.b64encode(PNG + b"rest").decode() in page and "<figcaption>a caption</figcaption>" in page
    assert "never" not in page
    assert "failed in retrofit_report_section: ValueError: boom" in page
    assert "refers to an external resource" in page and "example.org" not in page
    assert "image 1 is not a PNG, JPEG or GIF" in page and "it is a str, not a ReportSection" in page
    assert "<h2>Knobs of the chosen candidate</h2>" in page  # the rest of the report is kept
    assert "ValueError: boom" in capsys.readouterr().err


def test_a_domain_that_is_not_installed_gets_a_note(finished, tmp_path):
    run_dir = tmp_path / "R"
    run_dir.mkdir()
    for name in ("config.toml", "history.jsonl", "validation.jsonl", "checkpoints.jsonl"):
        (run_dir / name).write_bytes((finished / name).read_bytes())
    summary = json.loads((finished / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "domain": "gone"}))
    page = render(read_run(run_dir), load())
    assert "Domain gone is not installed here" in page


@pytest.mark.parametrize("section, problem", [
    (ReportSection(""), "its title is empty"),
    (ReportSection("t", "<a href=\"http://x\">x</a>"), "external resource"),
    (ReportSection("t", "<div style=\"background:url(https://x/y.png)\"></div>"), "external resource"),
    (ReportSection("t", "<style>@import 'a.css'</style>"), "external resource"),
    (ReportSection("t", images=[ReportImage(b"GIF8")]), "not a PNG, JPEG or GIF"),
])
def test_sections_that_would_break_the_page_are_refused(section, problem):
    assert any(problem in p for p in section.problems())


def test_good_sections_pass_and_images_carry_their_type():
    section = ReportSection("t", "<p><a href='#result'>up</a></p>",
                            [ReportImage(b"GIF89a..."), ReportImage(b"\xff\xd8\xff...")])
    assert section.problems() == []
    assert [i.data_uri()[:15] for i in section.images] == ["data:image/gif;", "data:image/jpeg"]


def test_report_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a retrofit run directory" in capsys.readouterr().err
