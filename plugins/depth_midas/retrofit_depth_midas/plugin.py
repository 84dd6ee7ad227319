"""Hook implementations of the ``depth`` domain: retrofit a MiDaS/DPT model so fewer pixels are
off by more than X %.

The "model" the core sees is a :class:`DepthProblem`: the network, the dataset, the output
gamma and a feature cache. Evaluating a batch runs the network (or only the part of its head
after the first knob, from cached features), aligns each prediction to the ground truth with
the zero-shot protocol, and reports the bad-pixel rate, AbsRel, RMSE and the share of
degenerate predictions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from retrofit import ArrayKnob, Domain, Knob, Option, UsageError, hookimpl

from .report_section import retrofit_report_section  # noqa: F401

NAME = "depth"
ALIGNMENTS = ("per_image", "dataset", "none")
# Knob kinds of this pack, beside retrofit.nn's (channel_gain, output_gain, ...).
PACK_KINDS = ("gamma", "input_stats")
HEAD = "{head}"  # stands for the model's head module name in knob targets
DEFAULT_KNOBS = [
    # 32 gains on the input channels of the last 1x1 conv: they reshape the prediction through
    # the final ReLU, which the per-image scale-and-shift alignment cannot undo
    {"kind": "channel_gain", "target": f"{HEAD}.4.weight", "dim": 1},
    {"kind": "gamma"},  # disparity ** gamma: a non-affine recalibration of the output
    # per-channel input mean and std: undo a darker or colour-cast domain before the network
    # (on the demo's shifted scenes this is what moves the held-out error; it turns the head
    # cache off, so head-only knob sets run several times faster: benchmarks/depth_cache.py)
    {"kind": "input_stats"},
]
HEAD_ONLY_KNOBS = DEFAULT_KNOBS[:2]

DOMAIN = Domain(
    name=NAME,
    help="MiDaS/DPT depth models, judged by the share of pixels off by more than X %.",
    options=(
        Option("model", "builtin", "builtin, a TinyMidas checkpoint, a Hugging Face DPT directory or id "
                                   "(Intel/dpt-large), or hub:DPT_Large"),
        Option("data", "", "dataset folder (rgb/, depth/, dataset.toml; see docs/depth.md); empty: the demo's "
                           "rendered shifted-domain scenes"),
        Option("demo_images", 64, "images of the demo dataset (half train, half validation)"),
        Option("demo_seed", 1, "seed of the demo dataset's scenes"),
        Option("threshold", 1.25, "a pixel is bad when max(d/d*, d*/d) exceeds this; off by more than X % is 1 + X/100"),
        Option("alignment", "per_image", "scale-and-shift fit in inverse depth: per image, over the dataset, or "
                                         "none for metric models", choices=ALIGNMENTS),
        Option("depth_cap", 10.0, "depths beyond this (metres) are clamped, as in the MiDaS protocol"),
        Option("batch_size", 8, "images per batch"),
        Option("input_size", 0, "network input size (shorter side); 0: the model's own"),
        Option("cache_features", True, "re-run only the head after the first knob, from features cached per image"),
        Option("device", "cpu", "torch device"),
        Option("knobs", DEFAULT_KNOBS, "knob specs (retrofit.nn kinds, plus gamma and input_stats); "
                                       "{head} stands for the model's head", cli=False),
    ),
    objective={"bad_pixel_rate": 1.0},
    run_defaults={"budget": 300, "validate_every": 60},
)


@dataclass
class DepthProblem:
    """Everything an evaluation needs, loaded once per process."""

    model: Any  # models.DepthModel
    dataset: Any  # data.DepthDataset
    options: dict[str, Any]
    gamma: np.ndarray = field(default_factory=lambda: np.ones(1))
    cut: int | None = None  # head child the cache starts at; None: no cache, full forward
    cache: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)

    def sample(self, name: str) -> Any:
        if name not in self.samples:
            self.samples[name] = self.dataset.load(name)
        return self.samples[name]

    def inputs(self, name: str) -> np.ndarray:
        from .preprocess import prepare

        model = self.model
        size = self.options["input_size"] or model.input_size
        return prepare(self.sample(name).rgb, size=size, keep_aspect=model.keep_aspect,
                       normalization=model.normalization)

    def predict(self, names: tuple[str, ...]) -> list[np.ndarray]:
        """Disparity at each image's ground-truth resolution, knobs as currently applied.

        Images of one shape go through the network together; with a cache, the activations at
        the cut are kept per batch, so a candidate costs one pass of the rest of the head.
        """
        import torch

        from .preprocess import resize_back

        inputs = [self.inputs(name) for name in names] if self.cut is None or names not in self.cache else []
        groups = [list(names)] if len({i.shape for i in inputs}) <= 1 else [[n] for n in names]
        disparities: list[np.ndarray] = []
        with torch.no_grad():
            for group in groups:
                key = tuple(group)
                if self.cut is None:
                    disparity = self.model.forward(np.stack([inputs[names.index(n)] for n in group]))
                else:
                    if key not in self.cache:
                        pixels = np.stack([inputs[names.index(n)] for n in group])
                        self.cache[key] = self.model.head_module[: self.cut](self.model.features(pixels))
                    disparity = self.model.head_module[self.cut:](self.cache[key]).squeeze(1)
                disparities.extend(disparity.float().cpu().numpy())
        outputs = []
        for name, prediction in zip(names, disparities):
            with np.errstate(invalid="ignore"):  # a negative base with a fractional gamma is a NaN: a failure
                prediction = np.power(prediction, float(self.gamma[0]))
            outputs.append(resize_back(prediction, self.sample(name).depth.shape))
        return outputs


def _threads(config: Any) -> None:
    """Share the cores between pool workers: with the head cache a candidate is a few small
    tensor ops, and two threads per process on this 2-core machine made it 3.6x slower than one."""
    import torch

    workers = config.run.resolved_workers()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, workers)))


def _dataset(options: Any) -> Any:
    """The ``data`` folder, or the demo's rendered scenes (made once, then cached)."""
    from .data import DepthDataset
    from .demo_data import demo_dataset

    if options["data"]:
        return DepthDataset(Path(options["data"]))
    return DepthDataset(demo_dataset(options["demo_images"], options["demo_seed"]))


@hookimpl
def retrofit_register_domains(register: Any) -> None:
    register(DOMAIN)


@hookimpl
def retrofit_load_model(domain: str, config: Any) -> DepthProblem | None:
    if domain != NAME:
        return None
    from .models import load_model

    options = dict(config.options)
    _threads(config)
    model = load_model(options["model"], device=options["device"])
    return DepthProblem(model=model, dataset=_dataset(options), options=options)


@hookimpl
def retrofit_expose_parameters(domain: str, model: Any, config: Any) -> list[Knob] | None:
    if domain != NAME:
        return None
    return build_depth_knobs(model, list(config.options["knobs"]))


class GammaKnob(ArrayKnob):
    """``disparity ** gamma`` on the network's output (identity 1)."""

    def __init__(self, gamma: np.ndarray, sigma: float) -> None:
        super().__init__("output_gamma", gamma, sigma=sigma, lower=0.25, upper=4.0)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "spec": {"kind": "gamma"}}


class InputStatsKnob(Knob):
    """The per-channel mean and std that normalise input images (6 values, identity: the model's own)."""

    name = "input_stats"
    size = 6
    lower, upper = 0.02, 2.0  # keeps every std positive; means of [0, 1] images stay inside too

    def __init__(self, normalization: Any, sigma: float) -> None:
        self.normalization = normalization
        self.sigma = sigma
        self._original = np.concatenate([normalization.mean, normalization.std]).astype(float)

    def identity(self) -> np.ndarray:
        return self._original.copy()

    def apply(self, values: np.ndarray) -> None:
        self.normalization.mean[...] = values[:3]  # the model's own arrays, read at every prepare()
        self.normalization.std[...] = values[3:]

    def restore(self) -> None:
        self.apply(self._original)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "spec": {"kind": "input_stats"}}


def build_depth_knobs(problem: DepthProblem, specs: list[dict[str, Any]]) -> list[Knob]:
    """Knobs from specs: this pack's kinds here, the rest through ``retrofit.nn.build_knobs``.

    Also decides where the feature cache may start: at the first head child a knob touches,
    and nowhere if a knob acts before the head (or on the input statistics).
    """
    from retrofit.nn import build_knobs

    model = problem.model
    knobs: list[Knob] = []
    torch_specs = []
    cacheable = bool(problem.options["cache_features"])
    for spec in specs:
        kind = spec.get("kind") if isinstance(spec, dict) else None
        if kind == "gamma":
            knobs.append(GammaKnob(problem.gamma, sigma=float(spec.get("sigma", 0.05))))
        elif kind == "input_stats":
            knobs.append(InputStatsKnob(model.normalization, sigma=float(spec.get("sigma", 0.02))))
            cacheable = False
        else:
            if not isinstance(spec, dict) or "target" not in spec:
                raise UsageError(f"depth.knobs: {spec!r} needs a kind and a target (kinds: {', '.join(PACK_KINDS)} "
                                 f"and retrofit.nn's)")
            torch_specs.append({**spec, "target": str(spec["target"]).replace(HEAD, model.head_prefix)})
    knobs.extend(build_knobs(model.net, torch_specs) if torch_specs else [])
    problem.cut = _cache_start(model, torch_specs) if cacheable else None
    problem.cache.clear()
    return knobs


def _cache_start(model: Any, torch_specs: list[dict[str, Any]]) -> int | None:
    """Index of the first head child any knob touches (the cache holds that child's input)."""
    prefix = model.head_prefix + "."
    touched = []
    for spec in torch_specs:
        target = spec["target"]
        if not target.startswith(prefix):
            return None  # a knob before the head: features change with the candidate
        child = target[len(prefix):].split(".")[0]
        if not child.isdigit():
            return None
        touched.append(int(child))
    return min(touched, default=len(model.head_module))


@hookimpl
def retrofit_batches(domain: str, config: Any, split: str) -> list[tuple[str, ...]] | None:
    if domain != NAME:
        return None
    options = config.options
    dataset = _dataset(options)
    # dataset-level alignment fits one scale and shift over the whole split: one batch
    batches = ([tuple(dataset.names(split))] if options["alignment"] == "dataset"
               else dataset.batches(split, options["batch_size"]))
    if not batches or not batches[0]:
        raise UsageError(f"dataset {dataset.root} has no {split} images")
    return batches


@hookimpl
def retrofit_evaluate(domain: str, model: Any, batch: tuple[str, ...], config: Any) -> dict[str, float] | None:
    if domain != NAME:
        return None
    from .metrics import depth_metrics

    options = config.options
    predictions = model.predict(batch)
    samples = [model.sample(name) for name in batch]
    per_image = depth_metrics(predictions, [s.depth for s in samples], [s.valid for s in samples],
                              threshold=options["threshold"], depth_cap=options["depth_cap"],
                              alignment=options["alignment"])
    return {key: float(np.mean([m[key] for m in per_image])) for key in ("bad_pixel_rate", "abs_rel", "rmse")} | {
        "degenerate_rate": float(np.mean([m["degenerate"] for m in per_image]))}


@hookimpl
def retrofit_probe_groups(domain: str, model: Any) -> list[Any] | None:
    """Every layer of the network (channel gains, biases, output gains), plus this pack's
    output gamma and input statistics, for ``retrofit depth probe``."""
    if domain != NAME:
        return None
    from retrofit import ProbeGroup
    from retrofit.nn.probe import torch_groups

    model.cut = None  # probed groups reach anywhere in the network: cached activations would be stale
    extra = [ProbeGroup("output gamma", (GammaKnob(model.gamma, sigma=0.05),)),
             ProbeGroup("input statistics", (InputStatsKnob(model.model.normalization, sigma=0.02),))]
    return [*torch_groups(model.model.net), *extra]


@hookimpl
def retrofit_export(domain: str, model: Any, knobs: Any, values: dict[str, Any], output: Path) -> Path | None:
    """The network's state_dict with its knobs baked in; gamma and input statistics live in the
    delta file the core writes beside it."""
    if domain != NAME:
        return None
    from retrofit.nn.plugin import retrofit_export as torch_export

    network_knobs = [knob for knob in knobs if not isinstance(knob, (GammaKnob, InputStatsKnob))]
    if not network_knobs:
        return None
    return torch_export(domain=domain, model=model.model.net, knobs=network_knobs,
                        values={k.name: values[k.name] for k in network_knobs}, output=output)


@hookimpl
def retrofit_run_finished(domain: str, config: Any, run_dir: Path, summary: dict[str, Any]) -> None:
    """Error maps of a few held-out images, before and after: ``error_maps.png``."""
    if domain != NAME or not summary.get("best", {}).get("values"):
        return
    from .error_maps import write_error_maps

    write_error_maps(config, summary, run_dir / "error_maps.png")
