"""The depth domain end to end: the CLI on the demo data, the head cache, Hugging Face models,
user dataset folders, export, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, history, summary
from retrofit.config import resolve
from retrofit.evaluator import Evaluator, Task
from retrofit_depth_midas.models import save_tiny_dpt
from retrofit_depth_midas.net import TinyMidas, save_checkpoint
from retrofit_depth_midas.plugin import DOMAIN, HEAD_ONLY_KNOBS
from retrofit_depth_midas.scenes import SHIFTED, write_dataset

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """A random TinyMidas checkpoint, a small dataset folder and a private cache."""
    root = tmp_path_factory.mktemp("depth")
    torch.manual_seed(0)
    save_checkpoint(TinyMidas(), root / "tiny.pt", input_size=96, normalization=IMAGENET)
    write_dataset(root / "data", SHIFTED, count=8, seed=3)
    return {"root": root, "model": root / "tiny.pt", "data": root / "data", "env": {"RETROFIT_CACHE": str(root)}}


def _config(workspace: dict[str, Path], **options) -> object:
    overrides = {"depth.model": str(workspace["model"]), "depth.data": str(workspace["data"]),
                 "depth.batch_size": 2, "run.executor": "serial"}
    overrides.update({f"depth.{k}": v for k, v in options.items()})
    return resolve(DOMAIN, None, overrides)


def test_tune_on_the_demo_data_writes_records_and_error_maps(workspace):
    root = workspace["root"]
    cli("depth", "tune", "--model", str(workspace["model"]), "--demo-images", "8", "--batch-size", "2",
        "--budget", "12", "--workers", "2", "--out", "R", cwd=root, env=workspace["env"], check=0)
    result = summary(root / "R")
    assert result["status"] == "finished" and result["evaluations"] == 12 == len(history(root / "R"))
    assert result["parameters"]["count"] == 39  # 32 input gains of the last 1x1 conv, gamma, input mean and std
    for split in ("train", "validation"):
        assert set(result["baseline"][split]["metrics"]) == {"bad_pixel_rate", "abs_rel", "rmse", "degenerate_rate"}
    assert (root / "R" / "error_maps.png").stat().st_size > 1000
    assert list((root / "depth").glob("shifted-8-1-*/dataset.toml"))  # rendered once, into the cache


def test_the_head_cache_gives_the_same_figures_as_a_full_forward(workspace):
    cached = Evaluator(_config(workspace, knobs=HEAD_ONLY_KNOBS))
    full = Evaluator(_config(workspace, knobs=HEAD_ONLY_KNOBS, cache_features=False))
    assert cached.model.cut == 4 and full.model.cut is None
    rng = np.random.default_rng(0)
    for _ in range(3):
        values = cached.space.to_natural(rng.normal(size=cached.space.size))
        a = cached.evaluate(Task(1, "train", values))
        b = full.evaluate(Task(1, "train", values))
        assert a.error is None and a.loss == pytest.approx(b.loss, abs=1e-6)
        assert a.metrics == pytest.approx(b.metrics, rel=1e-5)


def test_knobs_before_the_head_or_on_the_input_disable_the_cache(workspace):
    early = Evaluator(_config(workspace, knobs=[{"kind": "channel_gain", "target": "scratch.output_conv.0.weight"},
                                                {"kind": "channel_gain", "target": "{head}.4.weight", "dim": 1}]))
    assert early.model.cut == 0
    inputs = Evaluator(_config(workspace, knobs=[{"kind": "input_stats"}, {"kind": "gamma"}]))
    assert inputs.model.cut is None and inputs.space.size == 7
    trunk = Evaluator(_config(workspace, knobs=[{"kind": "bias_shift", "target": "stem.1.bias"}]))
    assert trunk.model.cut is None


def test_a_hugging_face_dpt_goes_through_the_same_path(workspace, tmp_path):
    model_dir = save_tiny_dpt(tmp_path / "tiny-dpt")
    done = cli("depth", "evaluate", "--model", str(model_dir), "--data", str(workspace["data"]), "--json",
               cwd=tmp_path, env=workspace["env"], check=0)
    figures = json.loads(done.stdout)
    assert 0 <= figures["validation"]["metrics"]["bad_pixel_rate"] <= 1
    evaluator = Evaluator(_config(workspace, model=str(model_dir), knobs=HEAD_ONLY_KNOBS))
    assert evaluator.model.model.head_prefix == "head.head" and evaluator.model.cut == 4


def test_evaluate_any_folder_in_the_documented_format(workspace, tmp_path):
    folder = write_dataset(tmp_path / "mine", SHIFTED, count=4, seed=9, depth_format="npy")
    done = cli("depth", "evaluate", "--data", str(folder), "--model", str(workspace["model"]), "--split",
               "validation", "--json", cwd=tmp_path, check=0)
    assert set(json.loads(done.stdout)) == {"validation"}


def test_export_bakes_the_gains_and_keeps_the_gamma_in_the_delta(workspace):
    root = workspace["root"]
    if not (root / "R").exists():
        pytest.fail("depends on test_tune_on_the_demo_data_writes_records_and_error_maps")
    cli("depth", "export", "R", "--output", "out/model.pt", cwd=root, env=workspace["env"], check=0)
    state = torch.load(root / "out" / "model.pt", weights_only=True)
    assert "scratch.output_conv.4.weight" in state
    delta = json.loads((root / "out" / "model.pt.delta.json").read_text())
    assert set(delta["values"]) == {"channel_gain:scratch.output_conv.4.weight", "output_gamma", "input_stats"}


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent/folder"], "dataset folder /nonexistent/folder does not exist"),
    (["--model", "/nonexistent/model.pt"], "/nonexistent/model.pt"),
    (["--model", "Intel/dpt-large"], "not available offline"),
    (["--set", "depth.alignment=\"sideways\""], "depth.alignment must be one of"),
])
def test_bad_input_is_one_line_and_exit_code_2(workspace, tmp_path, args, message):
    done = cli("depth", "evaluate", "--model", str(workspace["model"]), "--data", str(workspace["data"]), *args,
               cwd=tmp_path, env={**workspace["env"], "HF_HUB_OFFLINE": "1"}, check=2)
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_probe_ranks_the_whole_network_and_suggests_buildable_knobs(workspace, tmp_path):
    done = cli("depth", "probe", "--model", str(workspace["model"]), "--data", str(workspace["data"]),
               "--batches", "1", "--perturbations", "2", "--max-parameters", "40", "--json", cwd=tmp_path, check=0)
    report = json.loads(done.stdout)
    names = {row["name"] for row in report["rows"]}
    assert {"output gamma", "input statistics"} <= names and any(n.startswith("scratch.output_conv") for n in names)
    assert any(n.startswith("stem") or n.startswith("stages") for n in names)  # before the head too
    evaluator = Evaluator(_config(workspace, knobs=report["suggested"]))  # the suggestion builds as it is
    assert 0 < evaluator.space.size <= 40
