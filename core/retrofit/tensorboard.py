"""Optional TensorBoard logging of a run, for people who watch their runs there.

With ``run.tensorboard = "DIR"`` the engine writes through a :class:`TensorBoardRecord`: the
run directory's records as always, and each line as scalars in ``DIR/<run name>/`` as it is
appended (``tensorboard --logdir DIR`` then shows every run side by side). The step is the
number of train evaluations told so far. Scalars:

* ``train/loss``, ``train/best_loss``, ``train/failures`` and ``train_metrics/<metric>``: one
  point per train evaluation;
* ``validation/loss`` and ``validation_metrics/<metric>``: one point per validation re-score;
* ``checkpoint/chosen_train_loss``, ``checkpoint/chosen_validation_loss``, ``checkpoint/gap``.

The writer comes from ``tensorboardX`` (light: protobuf and numpy), else from
``torch.utils.tensorboard`` (which needs the ``tensorboard`` package); install either with
``pip install 'retrofit-core[tensorboard]'``. Both are imported only when a run asks for it.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from retrofit.errors import UsageError
from retrofit.records import CHECKPOINTS, HISTORY, VALIDATION, RunRecord

INSTALL = "pip install 'retrofit-core[tensorboard]'"


def writer_factory() -> Any:
    """The ``SummaryWriter`` class of whichever TensorBoard writer is installed."""
    if importlib.util.find_spec("tensorboardX") is not None:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    if importlib.util.find_spec("tensorboard") is not None and importlib.util.find_spec("torch") is not None:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter
    raise UsageError(f"run.tensorboard is set but no TensorBoard writer is installed: {INSTALL} "
                     f"(or set run.tensorboard = \"\")")


class TensorBoardRecord(RunRecord):
    """A run record that also logs what it appends as TensorBoard scalars."""

    def __init__(self, record: RunRecord, logdir: Path) -> None:
        super().__init__(record.path)
        self.logdir = Path(logdir) / record.path.name
        self._factory = writer_factory()  # fails before the run starts when nothing is installed
        self._writer: Any = None  # made at the first line, so a run that never starts leaves no thread
        history = self.read_lines(HISTORY)  # a resumed run goes on from its last step
        self._step = len(history)
        self._failures = sum(1 for e in history if e.get("error"))
        losses = [e["loss"] for e in history if e.get("error") is None and _finite(e.get("loss"))]
        self._best = min(losses, default=math.inf)

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if _finite(value):
            if self._writer is None:
                self.logdir.mkdir(parents=True, exist_ok=True)
                self._writer = self._factory(log_dir=str(self.logdir))
            self._writer.add_scalar(tag, float(value), step)

    def append(self, name: str, entry: dict[str, Any]) -> None:
        super().append(name, entry)  # the record first: TensorBoard is a view of it
        if name == HISTORY:
            self._step += 1
            if entry.get("error"):
                self._failures += 1
            elif _finite(entry.get("loss")):
                self._best = min(self._best, entry["loss"])
                self._scalar("train/loss", entry["loss"], self._step)
                for metric, value in (entry.get("metrics") or {}).items():
                    self._scalar(f"train_metrics/{metric}", value, self._step)
            self._scalar("train/best_loss", self._best, self._step)
            self._scalar("train/failures", self._failures, self._step)
        elif name == VALIDATION and entry.get("error") is None:
            self._scalar("validation/loss", entry.get("loss"), self._step)
            for metric, value in (entry.get("metrics") or {}).items():
                self._scalar(f"validation_metrics/{metric}", value, self._step)
        elif name == CHECKPOINTS:
            step = entry.get("evaluations", self._step)
            train, held_out = entry.get("chosen_train_loss"), entry.get("chosen_validation_loss")
            self._scalar("checkpoint/chosen_train_loss", train, step)
            self._scalar("checkpoint/chosen_validation_loss", held_out, step)
            if _finite(train) and _finite(held_out):
                self._scalar("checkpoint/gap", held_out - train, step)

    def write_summary(self, summary: dict[str, Any]) -> None:
        super().write_summary(summary)
        if self._writer is not None:  # at each checkpoint, and for good at the end
            if summary.get("status") == "running":
                self._writer.flush()
            else:
                self._writer.close()
                self._writer = None


def logging_record(record: RunRecord, logdir: str) -> TensorBoardRecord:
    """``record``, logging to TensorBoard under ``logdir`` too."""
    return TensorBoardRecord(record, Path(logdir).expanduser())


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
