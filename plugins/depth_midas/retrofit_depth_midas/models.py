"""Depth models behind one interface, whatever their origin.

:func:`load_model` understands these ``--model`` specs:

=====================================  =========================================================
``builtin``                             the pack's TinyMidas at ``retrofit_depth_midas/assets/tiny_midas.pt``
``PATH`` (a file)                       a TinyMidas checkpoint written by :func:`~retrofit_depth_midas.net.save_checkpoint`
``DIR`` (with ``config.json``)          a Hugging Face ``DPTForDepthEstimation`` saved with ``save_pretrained``
``hf:OWNER/NAME`` or ``OWNER/NAME``     a DPT on the Hugging Face hub (``Intel/dpt-large``, ``Intel/dpt-hybrid-midas``)
``hub:TYPE``                            a torch.hub MiDaS model (``DPT_Large``, ``DPT_Hybrid``, ``MiDaS_small``, ...)
=====================================  =========================================================

A local path wins over a hub id of the same name; ``hf:`` forces the hub.

Every model comes back as a :class:`DepthModel`: the ``nn.Module`` the knobs act on, its
input convention (normalisation, size, aspect) and a split of its forward pass into
:meth:`DepthModel.features` (everything before the head) and :meth:`DepthModel.head`, so that
a search that only turns head knobs computes the features once per image.

transformers, timm and network access are all optional: each path that needs one says so
in a single :class:`~retrofit.errors.UsageError` line when it is missing.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from retrofit.errors import UsageError
from torch import Tensor, nn

from retrofit_depth_midas.net import TinyMidas, load_checkpoint
from retrofit_depth_midas.preprocess import HALF, IMAGENET, Normalization

#: where ``builtin`` looks; ``python -m retrofit_depth_midas.train`` writes it.
BUILTIN_CHECKPOINT = Path(__file__).parent / "assets" / "tiny_midas.pt"
TRAIN_COMMAND = "python -m retrofit_depth_midas.train"

#: torch.hub MiDaS model types -> (input size, normalisation, keep aspect), after the MiDaS
#: repository's transforms: v2.1 models use ImageNet statistics, DPT-family models 0.5/0.5,
#: and Swin/LeViT backbones only take square inputs.
HUB_REPO = "intel-isl/MiDaS"
HUB_MODELS: dict[str, tuple[int, Normalization, bool]] = {
    "MiDaS": (384, IMAGENET, True),
    "MiDaS_small": (256, IMAGENET, True),
    "DPT_Large": (384, HALF, True),
    "DPT_Hybrid": (384, HALF, True),
    "DPT_BEiT_L_512": (512, HALF, True),
    "DPT_BEiT_L_384": (384, HALF, True),
    "DPT_BEiT_B_384": (384, HALF, True),
    "DPT_SwinV2_L_384": (384, HALF, False),
    "DPT_SwinV2_B_384": (384, HALF, False),
    "DPT_SwinV2_T_256": (256, HALF, False),
    "DPT_Swin_L_384": (384, HALF, False),
    "DPT_Next_ViT_L_384": (384, HALF, True),
    "DPT_LeViT_224": (224, HALF, False),
}

MIDAS_HEAD = "scratch.output_conv"
HF_DPT_HEAD = "head.head"

# OWNER/NAME as the Hugging Face hub spells repository ids
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LEGACY_ID = re.compile(r"^[A-Za-z0-9][\w.-]*$")  # hub ids without an owner, e.g. "gpt2"
_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".json")


def normalization(mean: Any, std: Any) -> Normalization:
    """A :class:`Normalization` whose mean and std are float64 arrays of shape (3,).

    Arrays rather than tuples so that an input-statistics knob can edit them in place;
    :func:`~retrofit_depth_midas.preprocess.prepare` reads them afresh for every image.
    """
    mean_arr = np.array(mean, dtype=np.float64).reshape(-1)
    std_arr = np.array(std, dtype=np.float64).reshape(-1)
    return Normalization(mean=mean_arr, std=std_arr)  # type: ignore[arg-type]


class _Cut(Exception):
    """Raised by the pre-hook of :func:`run_to` to stop a forward pass at the head."""


def run_to(net: nn.Module, module: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
    """Run ``net(*args, **kwargs)`` up to ``module`` and return the tensor it would receive.

    A forward pre-hook records ``module``'s first input and aborts the pass, so the head is
    not computed and the features are exactly those the model's own forward would use: no
    re-implementation of a third-party forward that could drift between library versions.
    """
    captured: list[Tensor] = []

    def stop(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
        captured.append(inputs[0])
        raise _Cut

    handle = module.register_forward_pre_hook(stop)
    try:
        net(*args, **kwargs)
    except _Cut:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"{type(net).__name__}'s forward never reached its head {type(module).__name__}")
    return captured[0]


@dataclass
class DepthModel:
    """A depth network, its input convention and its split at the head.

    Attributes:
        net: the ``nn.Module`` that knobs act on (parameter names as in its checkpoint).
        name: how the model was named on the command line.
        family: ``"tinymidas"``, ``"hf-dpt"`` or ``"torchhub-midas"``.
        normalization: input mean/std, float64 arrays of shape (3,), editable in place.
        input_size: side length images are resized to (the shorter side when ``keep_aspect``).
        keep_aspect: whether inputs may be non-square (Hugging Face ViT-DPT needs squares).
        head_prefix: module name of the head inside ``net``: ``scratch.output_conv``
            (MiDaS, TinyMidas) or ``head.head`` (Hugging Face DPT). Its children are
            ``0`` conv 3x3, ``1`` upsample x2, ``2`` conv 3x3 to 32 channels, ``3`` ReLU,
            ``4`` conv 1x1 to one channel, ``5`` ReLU.
        meta: what the source says about the model (a TinyMidas checkpoint's ``meta``, ...).

    :meth:`features`, :meth:`head` and :meth:`forward` run under ``torch.no_grad`` and
    return disparity (relative inverse depth) of shape ``[B, H, W]``; ``forward(x)`` is
    ``head(features(x))`` bit for bit.
    """

    net: nn.Module
    name: str
    family: str
    normalization: Normalization
    input_size: int
    keep_aspect: bool
    head_prefix: str
    meta: dict[str, Any] = field(default_factory=dict)
    features_fn: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)

    @property
    def head_module(self) -> nn.Module:
        """The head as a module (``net.get_submodule(head_prefix)``)."""
        return self.net.get_submodule(self.head_prefix)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def in_head(self, target: str) -> bool:
        """Whether a parameter or module name lies inside the head (then features can be cached)."""
        return target == self.head_prefix or target.startswith(self.head_prefix + ".")

    def _input(self, pixel_values: Tensor | np.ndarray) -> Tensor:
        x = torch.as_tensor(pixel_values)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected [B, 3, H, W] pixel values, got shape {tuple(x.shape)}")
        return x.to(device=self.device, dtype=self.dtype)

    def features(self, pixel_values: Tensor | np.ndarray) -> Tensor:
        """Everything before the head: the tensor ``head_module`` receives."""
        x = self._input(pixel_values)
        with torch.no_grad():
            if self.features_fn is not None:
                return self.features_fn(x)
            return run_to(self.net, self.head_module, x)

    def head(self, features: Tensor) -> Tensor:
        """The head on cached :meth:`features`: disparity ``[B, H, W]``."""
        with torch.no_grad():
            # every supported head ends in a one-channel conv; the models squeeze it away
            return self.head_module(features).squeeze(1)

    def forward(self, pixel_values: Tensor | np.ndarray) -> Tensor:
        """Disparity ``[B, H, W]`` for a batch of normalised images."""
        return self.head(self.features(pixel_values))

    __call__ = forward

    def to(self, device: str | torch.device) -> DepthModel:
        """Move the network (in place) and return ``self``."""
        self.net.to(device)
        return self


# -- TinyMidas --------------------------------------------------------------------------------


def from_tinymidas(net: TinyMidas, name: str = "tinymidas", meta: dict[str, Any] | None = None) -> DepthModel:
    """Wrap a :class:`TinyMidas`; ``meta`` may carry ``normalization``, ``input_size``, ``keep_aspect``."""
    meta = dict(getattr(net, "meta", {}) if meta is None else meta)
    norm = meta.get("normalization") or {"mean": IMAGENET.mean, "std": IMAGENET.std}
    try:
        stats = normalization(norm["mean"], norm["std"])
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"model {name}: bad 'normalization' in its metadata ({err})") from err
    net.eval()
    return DepthModel(net=net, name=name, family="tinymidas", normalization=stats,
                      input_size=int(meta.get("input_size", 128)), keep_aspect=bool(meta.get("keep_aspect", True)),
                      head_prefix=MIDAS_HEAD, meta=meta, features_fn=net.features)


def _load_tinymidas(path: Path, name: str, device: str | torch.device) -> DepthModel:
    return from_tinymidas(load_checkpoint(path), name=name).to(device)


def _load_builtin(device: str | torch.device) -> DepthModel:
    if not BUILTIN_CHECKPOINT.is_file():
        raise UsageError(f"the built-in model ({BUILTIN_CHECKPOINT}) is not there yet: "
                         f"train it with `{TRAIN_COMMAND}`, or pass --model PATH")
    return _load_tinymidas(BUILTIN_CHECKPOINT, "builtin", device)


# -- Hugging Face DPT -------------------------------------------------------------------------


def _dpt_class() -> Any:
    try:
        from transformers import DPTForDepthEstimation
    except ImportError as err:
        raise UsageError("Hugging Face DPT models need transformers: pip install transformers") from err
    except Exception as err:  # e.g. a torchvision that does not match torch breaks the import
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"transformers failed to import ({first[:200]}); "
                         "a broken torchvision is a common cause: uninstall it or match it to torch") from err
    return DPTForDepthEstimation


def from_hf_dpt(net: nn.Module, name: str) -> DepthModel:
    """Wrap a Hugging Face ``DPTForDepthEstimation`` (float32, eval mode).

    The cut sits at ``head.head``: :meth:`DepthModel.features` runs the model's own forward
    (backbone, neck and the optional projection) and stops where ``head.head`` would start.
    """
    net = net.float().eval()  # from_pretrained may keep a checkpoint's half dtype
    config = net.config
    return DepthModel(net=net, name=name, family="hf-dpt", normalization=normalization(HALF.mean, HALF.std),
                      input_size=int(getattr(config, "image_size", 384)), keep_aspect=False,
                      head_prefix=HF_DPT_HEAD, meta={"source": "huggingface", "model_type": config.model_type})


def _load_hf_dir(path: Path, device: str | torch.device) -> DepthModel:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UsageError(f"{path} is a directory without config.json: not a Hugging Face model "
                         "(a TinyMidas checkpoint is a single .pt file)")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise UsageError(f"{config_file} is not a readable JSON config ({err})") from err
    if model_type != "dpt":
        raise UsageError(f"{path} holds a {model_type!r} model; the depth pack loads DPT models "
                         "(DPTForDepthEstimation, model_type 'dpt')")
    dpt = _dpt_class()
    try:
        net = dpt.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"could not load the DPT model in {path} ({first[:200]})") from err
    return from_hf_dpt(net, str(path)).to(device)


def _offline_error(repo_id: str) -> UsageError:
    return UsageError(f"model {repo_id} is not available offline: download it on a machine with network "
                      f"(e.g. `hf download {repo_id} --local-dir DIR`) and pass --model DIR")


def _load_hf_hub(repo_id: str, device: str | torch.device) -> DepthModel:
    """From the local cache first; else check the hub quickly before downloading.

    A plain ``from_pretrained`` without network retries for about 20 s before failing, so
    the hub is asked once with a short timeout (no retries) and an unreachable hub, or
    ``HF_HUB_OFFLINE=1``, fails at once with what to download.
    """
    dpt = _dpt_class()
    try:
        return from_hf_dpt(dpt.from_pretrained(repo_id, local_files_only=True), repo_id).to(device)
    except OSError:
        pass  # not in the cache
    except (ValueError, RuntimeError) as err:  # cached, but not a DPT or damaged
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"could not load {repo_id} from the Hugging Face cache ({first[:200]})") from err
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=10)
    except GatedRepoError as err:
        raise UsageError(f"model {repo_id} is gated on the Hugging Face hub: accept its terms and log in "
                         "(`hf auth login`), or download it and pass --model DIR") from err
    except RepositoryNotFoundError as err:
        raise UsageError(f"there is no model {repo_id} on the Hugging Face hub (nor a local path of that name)") from err
    except Exception as err:  # offline mode, DNS, timeouts, proxies: all mean "cannot reach it"
        raise _offline_error(repo_id) from err
    try:
        net = dpt.from_pretrained(repo_id)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"could not load {repo_id} from the Hugging Face hub ({first[:200]})") from err
    return from_hf_dpt(net, repo_id).to(device)


def tiny_dpt_config() -> Any:
    """A tiny ``DPTConfig`` (ViT, ~330k parameters, square inputs, 64 px) for offline tests."""
    _dpt_class()
    from transformers import DPTConfig

    return DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                     image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                     neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32)


def random_tiny_dpt(seed: int = 0) -> nn.Module:
    """A randomly initialised tiny ``DPTForDepthEstimation`` with a usable output (eval mode).

    Hugging Face initialises convs with N(0, 0.02): through the neck the features shrink to
    ~1e-6 and the output to ~1e-8, which makes knob effects invisible. The neck's convs get
    PyTorch's default init and the head's He init, with a bias of 1 on the last conv so the
    final ReLU starts alive.
    """
    dpt = _dpt_class()
    torch.manual_seed(seed)
    net = dpt(tiny_dpt_config())
    for module in net.neck.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()
    convs = [m for m in net.head.head if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv in convs:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        convs[-1].bias.fill_(1.0)
    return net.eval()


def save_tiny_dpt(directory: str | Path, seed: int = 0) -> Path:
    """Save :func:`random_tiny_dpt` with ``save_pretrained`` (a directory ``load_model`` accepts)."""
    directory = Path(directory)
    random_tiny_dpt(seed).save_pretrained(str(directory))
    return directory


# -- torch.hub MiDaS (needs timm and network; not testable offline beyond its errors) ----------


def from_torch_hub(net: nn.Module, model_type: str) -> DepthModel:
    """Wrap a torch.hub MiDaS model; the cut sits at ``scratch.output_conv``.

    MiDaS's forward runs the encoder, the ``scratch`` refinement blocks, then
    ``scratch.output_conv`` and squeezes the channel: :func:`run_to` stops it right at
    ``output_conv``. Untested offline: real hub models need network and timm to build.
    """
    size, stats, keep_aspect = HUB_MODELS[model_type]
    return DepthModel(net=net.float().eval(), name=f"hub:{model_type}", family="torchhub-midas",
                      normalization=normalization(stats.mean, stats.std), input_size=size,
                      keep_aspect=keep_aspect, head_prefix=MIDAS_HEAD,
                      meta={"source": "torch.hub", "repo": HUB_REPO, "model_type": model_type})


def _load_torch_hub(model_type: str, device: str | torch.device) -> DepthModel:
    if model_type not in HUB_MODELS:
        raise UsageError(f"unknown torch.hub MiDaS model {model_type!r}; known: {', '.join(HUB_MODELS)}")
    try:
        importlib.import_module("timm")
    except Exception as err:  # missing, or broken by a mismatched torchvision
        raise UsageError(f"hub:{model_type} needs timm (pip install timm, with a torchvision that matches torch) "
                         "and network access; or use a Hugging Face DPT, e.g. --model Intel/dpt-large") from err
    try:
        net = torch.hub.load(HUB_REPO, model_type, trust_repo=True)
    except Exception as err:  # network, GitHub rate limits, hubconf errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"could not load hub:{model_type} from torch.hub ({first[:200]}); it needs network "
                         f"access the first time (cache: {torch.hub.get_dir()})") from err
    return from_torch_hub(net, model_type).to(device)


# -- dispatch ---------------------------------------------------------------------------------


def load_model(spec: str | Path, *, device: str | torch.device = "cpu") -> DepthModel:
    """Load the depth model named by ``spec`` (see the module docstring) onto ``device``."""
    text = str(spec).strip()
    if not text:
        raise UsageError("no model given: pass --model builtin, a checkpoint, a directory or a hub id")
    if text == "builtin":
        return _load_builtin(device)
    if text.startswith("hf:"):
        repo_id = text[3:]
        if not _HUB_ID.match(repo_id) and not _LEGACY_ID.match(repo_id):
            raise UsageError(f"{text!r} is not a Hugging Face model id (hf:OWNER/NAME, e.g. hf:Intel/dpt-large)")
        return _load_hf_hub(repo_id, device)
    if text.startswith("hub:"):
        return _load_torch_hub(text[4:], device)
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_hf_dir(path, device)
    if path.exists():
        return _load_tinymidas(path, path.stem, device)
    if _HUB_ID.match(text) and not text.lower().endswith(_FILE_SUFFIXES):
        return _load_hf_hub(text, device)
    raise UsageError(f"model {text} does not exist (expected builtin, a checkpoint file, a model directory, "
                     "hf:OWNER/NAME or hub:TYPE)")
