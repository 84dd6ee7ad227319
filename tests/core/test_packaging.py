"""Packaging acceptance, in a fresh virtual environment: the core alone has no doom domain;
``pip install ./plugins/doom_arnold`` next to it adds one, shipped agent included; the extras
name the packs.

Slow (a real install, about 45 s here with pip's cache and local wheels; it needs the package
index for the core's dependencies), so it is one test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(*command: str | Path, cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, command))}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _normal(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _domains(venv: Path, cwd: Path) -> dict[str, str]:
    rows = json.loads(_run(venv / "bin" / "retrofit", "plugins", "--json", cwd=cwd).stdout)
    return {domain: row["distribution"] for row in rows for domain in row["domains"]}


@pytest.mark.timeout(600)
def test_a_pack_installed_next_to_the_core_adds_its_domain(tmp_path):
    timings: dict[str, float] = {}
    start = time.perf_counter()
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    timings["venv"] = time.perf_counter() - start

    # the core alone, from the repository root, not editable, without the packs
    start = time.perf_counter()
    _run(python, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", ROOT, cwd=tmp_path)
    timings["core"] = time.perf_counter() - start
    location = _run(python, "-c", "import retrofit; print(retrofit.__file__)", cwd=tmp_path).stdout.strip()
    assert Path(location).is_relative_to(venv), f"retrofit imported from {location}, not the fresh venv"
    domains = _domains(venv, tmp_path)
    assert domains == {"toy": "retrofit-core"}, domains

    # one pack next to it
    start = time.perf_counter()
    _run(python, "-m", "pip", "install", "--quiet", ROOT / "plugins" / "doom_arnold", cwd=tmp_path)
    timings["doom pack"] = time.perf_counter() - start
    domains = _domains(venv, tmp_path)
    assert domains == {"toy": "retrofit-core", "doom": "retrofit-doom-arnold"}, domains
    # the shipped agent is inside the wheel: the installed pack plays a held-out episode with it
    done = _run(venv / "bin" / "retrofit", "doom", "evaluate", "--split", "validation", "--validation-episodes", "1",
                "--episode-timeout", "70", "--json", cwd=tmp_path, timeout=180)
    assert "kills_per_life" in done.stdout

    # an extra pulls its pack from the same repository ({root:uri} direct references)
    start = time.perf_counter()
    _run(python, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", f"{ROOT}[depth]", cwd=tmp_path)
    timings["core[depth]"] = time.perf_counter() - start
    assert _domains(venv, tmp_path)["depth"] == "retrofit-depth-midas"

    start = time.perf_counter()
    report = tmp_path / "report.json"
    _run(python, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--report", report,
         "-c", ROOT / "constraints.txt", f"{ROOT}[all]", cwd=tmp_path)
    timings["core[all] dry run"] = time.perf_counter() - start
    versions = {_normal(item["metadata"]["name"]): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    assert {"retrofit-core", "retrofit-depth-midas", "retrofit-doom-arnold", "retrofit-codegen"} <= set(versions)
    pinned = [line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    pins = dict(map(_normal, line.split("==")) for line in pinned if "==" in line)
    for name, version in versions.items():  # e.g. never an unpinned (multi-GB CUDA) torch
        if name in pins:
            assert version.split("+")[0] == pins[name], (name, version, pins[name])

    print("\npackaging timings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))
