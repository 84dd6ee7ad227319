"""``run.tensorboard``: a run's loss curves as TensorBoard event files, and a clear error
when no writer is installed."""

from __future__ import annotations

import importlib.util
import struct
from collections import defaultdict
from pathlib import Path

import pytest
from retrofit.cli import main
from retrofit.errors import UsageError


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under ``logdir``: TFRecord framing (length, CRC, payload,
    CRC) around ``Event`` protobufs, parsed with the messages tensorboardX ships."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = Event.FromString(data[offset + 12: offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars[value.tag].append((event.step, value.simple_value))
    return dict(scalars)


def test_a_run_logs_its_curves_for_tensorboard(toy_run, tmp_path):
    logdir = tmp_path / "tb"
    summary, run_dir = toy_run(budget=30, validate_every=10, tensorboard=str(logdir),
                               **{"toy.fault": "raise", "toy.fault_rate": 0.2})
    scalars = read_scalars(logdir / run_dir.name)  # one subdirectory per run
    assert [step for step, _ in scalars["train/best_loss"]] == list(range(1, 31))
    best = [value for _, value in scalars["train/best_loss"]]
    assert best == sorted(best, reverse=True)  # never gets worse
    assert best[-1] == pytest.approx(min(v for _, v in scalars["train/loss"]))
    assert len(scalars["train/loss"]) == 30 - summary["failed_evaluations"] > 0
    assert scalars["train/failures"][-1][1] == summary["failed_evaluations"] > 0
    assert len(scalars["validation/loss"]) == summary["rescore_evaluations"]
    assert [s for s, _ in scalars["checkpoint/chosen_validation_loss"]] == [10, 20, 30]
    assert scalars["checkpoint/chosen_validation_loss"][-1][1] == pytest.approx(summary["best"]["validation"]["loss"])
    assert "train_metrics/error_rate" in scalars and "validation_metrics/accuracy" in scalars


def test_without_a_writer_the_run_stops_before_it_starts(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboardX", "tensorboard") else real(name, *a))
    from retrofit.tensorboard import writer_factory

    with pytest.raises(UsageError, match=r"retrofit-core\[tensorboard\]"):
        writer_factory()
    run_dir = tmp_path / "R"
    assert main(["toy", "tune", "--budget", "5", "--executor", "serial", "--out", str(run_dir),
                 "--set", f"run.tensorboard={tmp_path / 'tb'}"]) == 2
    assert "no TensorBoard writer is installed" in capsys.readouterr().err
    assert not run_dir.exists() and not (tmp_path / "tb").exists()
