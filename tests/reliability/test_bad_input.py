"""Bad input everywhere a user types: one line naming the problem, exit code 2, no traceback.

Table-driven through the real command line: in this process for speed (``retrofit.cli.main``),
and a few cases as a separate process exactly as a user runs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from .faults import invoke

# (case, arguments, what the error line must name). Files are made by the `workspace` fixture.
CASES = [
    ("unknown domain", ["nope", "tune"], "'nope'"),
    ("unknown flag", ["toy", "tune", "--bogus"], "--bogus"),
    ("unknown --set key", ["toy", "tune", "--set", "toy.nope=1"], "toy.nope"),
    ("unknown --set section", ["toy", "tune", "--set", "tyo.dim=1"], "[tyo]"),
    ("--set without =", ["toy", "tune", "--set", "garbage"], "'garbage'"),
    ("--set without section", ["toy", "tune", "--set", "budget=3"], "'budget'"),
    ("unknown key in file", ["toy", "tune", "--config", "typo.toml"], "toy.dims"),
    ("unknown section in file", ["toy", "tune", "--config", "section.toml"], "[tyo]"),
    ("malformed TOML", ["toy", "tune", "--config", "bad.toml"], "bad.toml"),
    ("binary config", ["toy", "tune", "--config", "binary.toml"], "binary.toml"),
    ("config is a directory", ["toy", "tune", "--config", "adir"], "adir"),
    ("missing config", ["toy", "tune", "--config", "missing.toml"], "missing.toml"),
    ("wrong type flag", ["toy", "tune", "--budget", "abc"], "--budget"),
    ("float seed", ["toy", "tune", "--seed", "1.5"], "--seed"),
    ("wrong type --set", ["toy", "tune", "--set", 'run.budget="x"'], "run.budget"),
    ("wrong type in file", ["toy", "tune", "--config", "types.toml"], "run.seed"),
    ("wrong type domain option", ["toy", "tune", "--dim", "many"], "--dim"),
    ("option outside its choices", ["toy", "tune", "--fault", "boom"], "--fault"),
    ("executor outside its choices", ["toy", "tune", "--set", 'run.executor="cluster"'], "run.executor"),
    ("budget 0", ["toy", "tune", "--budget", "0"], "run.budget"),
    ("negative budget", ["toy", "tune", "--budget", "-3"], "run.budget"),
    ("negative budget in file", ["toy", "tune", "--config", "negative.toml"], "run.budget"),
    ("negative workers", ["toy", "tune", "--workers", "-1"], "run.workers"),
    ("negative timeout", ["toy", "tune", "--set", "run.eval_timeout=-1"], "run.eval_timeout"),
    ("nan timeout", ["toy", "tune", "--set", "run.eval_timeout=nan"], "run.eval_timeout"),
    ("unknown optimizer", ["toy", "tune", "--optimizer", "Nope", "--executor", "serial"], "'Nope'"),
    ("objective weight not a number", ["toy", "tune", "--set", 'objective.error_rate="x"'], "objective.error_rate"),
    ("malformed constraint", ["toy", "tune", "--set", 'constraints.accuracy="><"'], "constraints.accuracy"),
    ("out under a file", ["toy", "tune", "--out", "afile/run"], "afile/run"),
    ("out is a file", ["toy", "tune", "--out", "afile"], "afile"),
    ("resume nowhere", ["toy", "tune", "--resume", "nowhere"], "nowhere"),
    ("resume a non-run", ["toy", "tune", "--resume", "adir"], "adir"),
    ("resume with options", ["toy", "tune", "--resume", "adir", "--budget", "3"], "--resume"),
    ("missing params file", ["toy", "evaluate", "--params", "missing.json"], "missing.json"),
    ("export of a non-run", ["toy", "export", "nowhere", "--output", "x.pt"], "nowhere"),
    ("depth: missing model", ["depth", "tune", "--model", "missing.pt", "--executor", "serial"], "missing.pt"),
    ("depth: corrupt checkpoint", ["depth", "tune", "--model", "bad.pt", "--executor", "serial"], "bad.pt"),
    ("depth: missing data", ["depth", "tune", "--data", "nodata", "--executor", "serial"], "nodata"),
    ("depth: knob glob matching nothing",
     ["depth", "tune", "--set", 'depth.knobs=[{kind="scale", target="nomatch.*"}]', "--executor", "serial"],
     "nomatch.*"),
    ("depth: unknown knob kind",
     ["depth", "tune", "--set", 'depth.knobs=[{kind="magic", target="head.*"}]', "--executor", "serial"], "magic"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad-input")
    files = {
        "typo.toml": "[toy]\ndims = 3\n",
        "section.toml": "[tyo]\ndim = 3\n",
        "bad.toml": "[run\nbudget = ",
        "types.toml": '[run]\nseed = "x"\n',
        "negative.toml": "[run]\nbudget = -5\n",
        "afile": "a regular file\n",
        "bad.pt": "not a torch checkpoint\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "binary.toml").write_bytes(b"\xff\xfe\x00\x01")
    (root / "adir").mkdir()
    return root


def _the_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("retrofit: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(("args", "names"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_naming_it_and_exit_2(workspace: Path, monkeypatch: pytest.MonkeyPatch,
                                                    args: list[str], names: str) -> None:
    monkeypatch.chdir(workspace)
    code, err = invoke(args)
    assert names in _the_line(code, err)
    assert not list(workspace.glob("runs/*")), "bad input must not leave a run directory behind"


def test_a_dataset_with_mismatched_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found when the baseline is evaluated (the pack reads images lazily): the run stops at once
    with exit 2 and the file's name, instead of recording every candidate as failed."""
    from retrofit_depth_midas.data import write_sample

    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        write_sample(tmp_path / "data", name, np.zeros((16, 16, 3)), np.ones((16, 16)), depth_format="npy")
    np.save(tmp_path / "data" / "depth" / "b.npy", np.ones((12, 12), np.float32))
    code, err = invoke(["depth", "tune", "--data", "data", "--executor", "serial", "--budget", "4"])
    errors = [line for line in err.splitlines() if line.startswith("retrofit: error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "size mismatch" in errors[0] and "b.npy" in errors[0]


@pytest.mark.parametrize(("args", "names"), [
    (["nope", "tune"], "'nope'"),
    (["toy", "tune", "--config", "bad.toml"], "bad.toml"),
    (["toy", "tune", "--budget", "0"], "run.budget"),
    (["depth", "tune", "--model", "bad.pt", "--workers", "1"], "bad.pt"),  # the model fails in a worker process
])
def test_bad_input_through_a_real_process(workspace: Path, args: list[str], names: str) -> None:
    done = cli(*args, cwd=workspace)
    assert names in _the_line(done.returncode, done.stderr)
