"""The example plugin's ``retrofit_report_section``: a third-party pack adds a figure to the report."""

from __future__ import annotations

import base64
import re

from retrofit.cli import main

try:  # not a skip: CI installs it (make setup-test)
    import retrofit_example_curve  # noqa: F401
except ImportError as error:
    raise ImportError("install retrofit-example-curve first: pip install ./examples/curve_plugin") from error


def test_the_curve_section_is_in_the_report(tmp_path, capsys):
    run_dir = tmp_path / "R"
    assert main(["curve", "tune", "--budget", "12", "--executor", "serial", "--out", str(run_dir)]) == 0
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    start = page.index("<h2>Curve</h2>")
    section = page[start:page.index("</section>", start)]
    image, = re.findall(r"src='data:image/png;base64,([^']+)'", section)
    assert base64.b64decode(image).startswith(b"\x89PNG")
    assert "alt='curve before and after'" in section and "baseline and retrofitted cubic" in section
    assert "class='warning'" not in page
