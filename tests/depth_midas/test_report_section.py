"""The depth pack's report section: metrics before and after and the held-out error maps,
embedded from the run's error_maps.png or rendered for runs that have none."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import torch
from retrofit.cli import main
from retrofit.plugins import load
from retrofit.report import render
from retrofit.runs import read_run
from retrofit_depth_midas.net import TinyMidas, save_checkpoint
from retrofit_depth_midas.scenes import SHIFTED, write_dataset

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory) -> Path:
    """A tiny depth run (random TinyMidas, 6 images, 6 evaluations) with its error_maps.png."""
    root = tmp_path_factory.mktemp("depth-report")
    torch.manual_seed(0)
    save_checkpoint(TinyMidas(), root / "tiny.pt", input_size=64, normalization=IMAGENET)
    write_dataset(root / "data", SHIFTED, count=6, seed=3)
    assert main(["depth", "tune", "--model", str(root / "tiny.pt"), "--data", str(root / "data"), "--batch-size", "3",
                 "--budget", "6", "--executor", "serial", "--out", str(root / "R"),
                 "--set", "run.validate_every=3"]) == 0
    assert (root / "R" / "error_maps.png").is_file()
    return root / "R"


def _section(page: str) -> str:
    start = page.index("<h2>Depth: error maps</h2>")
    return page[start:page.index("</section>", start)]


def test_the_report_of_a_depth_run_shows_its_error_maps(depth_run, tmp_path, capsys):
    plugins = load()
    assert "retrofit_report_section" in next(i for i in plugins.infos if "depth" in i.domains).hooks
    assert main(["report", str(depth_run), "-o", str(tmp_path / "report.html")]) == 0
    section = _section((tmp_path / "report.html").read_text())
    maps = (depth_run / "error_maps.png").read_bytes()
    assert base64.b64encode(maps).decode() in section  # the run's own file, embedded as it is
    assert "Source: error_maps.png of the run" in section
    summary = json.loads((depth_run / "summary.json").read_text())
    rate = summary["best"]["validation"]["metrics"]["bad_pixel_rate"]
    assert "<td>bad_pixel_rate</td>" in section and f"{rate:.4g}" in section
    assert "off by more than 25 %" in section


def test_a_run_without_error_maps_gets_them_rendered_without_writing_into_it(depth_run, tmp_path):
    copy = tmp_path / "R"
    copy.mkdir()
    for path in depth_run.iterdir():
        if path.name != "error_maps.png" and path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    before = sorted(p.name for p in copy.iterdir())
    section = _section(render(read_run(copy), load()))
    assert "Source: rendered for this report" in section
    image, = re.findall(r"src='data:image/png;base64,([^']+)'", section)
    assert base64.b64decode(image).startswith(b"\x89PNG") and len(image) > 1000
    assert sorted(p.name for p in copy.iterdir()) == before


def test_a_run_with_no_chosen_candidate_says_so(depth_run, tmp_path):
    copy = tmp_path / "R"
    copy.mkdir()
    (copy / "config.toml").write_bytes((depth_run / "config.toml").read_bytes())
    first = (depth_run / "history.jsonl").read_text().splitlines()[0]
    entry = {**json.loads(first), "error": "RuntimeError: no", "loss": None}  # nothing succeeded yet
    (copy / "history.jsonl").write_text(json.dumps(entry) + "\n")
    section = _section(render(read_run(copy), load()))
    assert "No error maps: no candidate chosen yet." in section and "<img" not in section
