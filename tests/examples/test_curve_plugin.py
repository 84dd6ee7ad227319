"""The third-party example plugin (examples/curve_plugin), installed as its own distribution,
drives the whole command line."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, cli, history, summary

DISTRIBUTION = "retrofit-example-curve"

try:  # not a skip: CI installs it (make setup-test), and a silently skipped example proves nothing
    import retrofit_example_curve as curve
except ImportError as error:
    raise ImportError(f"install {DISTRIBUTION} first: pip install ./examples/curve_plugin") from error


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("curve")
    cli("curve", "tune", "--budget", "40", "--workers", "2", "--out", "R", cwd=cwd, check=0)
    return cwd / "R"


def test_it_is_a_separate_installed_distribution():
    dist = metadata.distribution(DISTRIBUTION)
    assert [ep.value for ep in dist.entry_points if ep.group == "retrofit"] == ["retrofit_example_curve"]
    assert any(r.startswith("retrofit-core") for r in dist.requires or [])
    # installed, not imported from the source tree
    assert Path(curve.__file__).resolve().parent != ROOT / "examples" / "curve_plugin" / "retrofit_example_curve"


def test_plugins_json_shows_the_distribution(tmp_path):
    rows = json.loads(cli("plugins", "--json", cwd=tmp_path, check=0).stdout)
    row, = [r for r in rows if "curve" in r["domains"]]
    assert row["distribution"] == DISTRIBUTION and row["version"] == metadata.version(DISTRIBUTION)
    assert row["status"] == "loaded" and row["name"] == "curve"
    assert {"retrofit_register_domains", "retrofit_register_commands", "retrofit_load_model",
            "retrofit_expose_parameters", "retrofit_batches", "retrofit_evaluate", "retrofit_aggregate",
            "retrofit_export", "retrofit_run_finished"} <= set(row["hooks"])


def test_tune_improves_held_out_loss_and_the_figures_add_up(run_dir):
    result = summary(run_dir)
    assert result["status"] == "finished" and result["domain"] == "curve"
    assert result["evaluations"] == 40 == len(history(run_dir)) and result["failed_evaluations"] == 0
    assert result["workers"] == 2 and result["parameters"]["count"] == 4
    baseline, best = result["baseline"], result["best"]
    assert best["validation"]["loss"] <= baseline["validation"]["loss"]
    assert best["validation"]["loss"] < baseline["validation"]["loss"], "the example should show a gain"
    relative = (baseline["validation"]["loss"] - best["validation"]["loss"]) / baseline["validation"]["loss"]
    assert result["improvement"]["validation_loss_relative"] == pytest.approx(relative)
    # the plugin's own loss (its retrofit_aggregate): the worst batch's failure rate
    for who in (baseline, best):
        for split in ("train", "validation"):
            figures = who[split]
            assert figures["loss"] == figures["metrics"]["worst_failure_rate"]
            assert figures["metrics"]["mean_failure_rate"] <= figures["metrics"]["worst_failure_rate"]
    # the baseline is the real unmodified model, recomputed here from the plugin's own functions
    from retrofit.config import resolve

    config = resolve(curve.DOMAIN)
    rates = [curve.retrofit_evaluate(domain="curve", model=curve._fit(), batch=b, config=config)["failure_rate"]
             for b in curve.retrofit_batches(domain="curve", split="validation")]
    assert baseline["validation"]["loss"] == max(rates)
    assert history(run_dir)[0]["values"]["coefficients"] == pytest.approx(list(curve._fit()))


def test_retrofit_run_finished_adds_the_plugins_artefact(run_dir):
    curves = json.loads((run_dir / "curve.json").read_text())
    assert curves["retrofitted"] == pytest.approx(
        list(np.polyval(summary(run_dir)["best"]["values"]["coefficients"], np.asarray(curves["x"]))))


def test_the_plugin_command(tmp_path):
    out = cli("curve-info", cwd=tmp_path, check=0).stdout
    assert out.startswith("cubic fitted to sin(2x) on [-1, 1]:")
    numbers = [float(v) for v in out.split(":", 1)[1].split(",")]
    assert numbers == pytest.approx(list(curve._fit()), abs=1e-4)
    assert "curve-info" in cli("--help", cwd=tmp_path, check=0).stdout


def test_export_writes_the_plugins_file_and_the_delta(run_dir, tmp_path):
    done = cli("curve", "export", str(run_dir), "--output", "coeffs.json", cwd=tmp_path, check=0)
    assert "wrote coeffs.json.delta.json" in done.stdout and "wrote coeffs.json\n" in done.stdout
    chosen = summary(run_dir)["best"]["values"]["coefficients"]
    assert json.loads((tmp_path / "coeffs.json").read_text()) == {"coefficients": chosen}
    delta = json.loads((tmp_path / "coeffs.json.delta.json").read_text())
    assert delta["format"] == "retrofit-delta/1" and delta["domain"] == "curve"
    assert delta["values"] == {"coefficients": chosen} and delta["knobs"][0]["kind"] == "ArrayKnob"
    # the exported coefficients reproduce the reported validation figure
    evaluated = json.loads(cli("curve", "evaluate", "--params", "coeffs.json.delta.json", "--split", "validation",
                               "--json", cwd=tmp_path, check=0).stdout)
    assert evaluated["validation"]["loss"] == summary(run_dir)["best"]["validation"]["loss"]
    assert not np.allclose(chosen, curve._fit())  # the export is the retrofit, not the original
