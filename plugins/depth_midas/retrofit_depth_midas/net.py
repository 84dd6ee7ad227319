"""TinyMidas: a small MiDaS-style depth network that trains and runs on a laptop CPU.

The shape follows MiDaS (Ranftl et al.): a strided convolutional encoder gives four feature
maps at 1/4, 1/8, 1/16 and 1/32 of the input; ``scratch`` projects each to a common width,
fuses them coarse to fine with residual refinement blocks, and ``scratch.output_conv`` turns
the finest map (1/2 resolution) into relative inverse depth at full resolution. The head
uses MiDaS's layout and names (``scratch.output_conv.{0,2,4}``), so knob specs written for
it read the same as for a real MiDaS checkpoint.

:meth:`TinyMidas.features` stops right before ``scratch.output_conv`` and
:meth:`TinyMidas.head` runs only that part: a search that only touches the head computes the
features once per image and re-runs the cheap head per candidate.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from retrofit.errors import UsageError
from torch import Tensor, nn

#: format tag of :func:`save_checkpoint` files; bumped on any incompatible change.
CHECKPOINT_FORMAT = "retrofit-tinymidas/1"
#: inputs must be multiples of this (the encoder halves the resolution five times).
MULTIPLE = 32


class Interpolate(nn.Module):
    """Bilinear resize by a fixed factor, as a module so it can sit inside ``nn.Sequential``."""

    def __init__(self, scale_factor: float = 2.0, mode: str = "bilinear", align_corners: bool = False) -> None:
        super().__init__()
        self.scale_factor, self.mode, self.align_corners = float(scale_factor), mode, bool(align_corners)

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode, align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}, mode={self.mode!r}, align_corners={self.align_corners}"


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    # BatchNorm speeds up the short training runs; in eval mode it is a fixed affine map
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Stage(nn.Module):
    """One encoder stage: a strided 3x3 conv, then a residual depthwise-separable conv.

    The separable refinement adds depth at a fraction of a full 3x3 conv's parameters.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = _conv_bn_relu(cin, cout, stride=2)
        self.refine = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, groups=cout, bias=False),
                                    nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(x)
        return F.relu(x + self.refine(x))


class _ResidualConvUnit(nn.Module):
    """MiDaS's residual unit: x + conv(relu(conv(relu(x))))."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        # not in-place: x itself is needed for the residual sum
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class _FusionBlock(nn.Module):
    """Adds the (refined) skip features to the coarser path, refines, upsamples x2, projects."""

    def __init__(self, features: int, with_skip: bool) -> None:
        super().__init__()
        # the coarsest block has no skip input: no unused parameters for it
        self.skip_unit = _ResidualConvUnit(features) if with_skip else None
        self.unit = _ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            if self.skip_unit is None:
                raise ValueError("this fusion block was built without a skip input")
            x = x + self.skip_unit(skip)
        x = self.unit(x)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    """MiDaS's ``scratch``: per-level projections, fusion blocks and the output head."""

    def __init__(self, channels: Sequence[int], features: int) -> None:
        super().__init__()
        # 3x3 projections as in MiDaS, without bias (the fusion convs carry the offsets)
        for level, cin in enumerate(channels, start=1):
            self.add_module(f"layer{level}_rn", nn.Conv2d(cin, features, 3, padding=1, bias=False))
        for level in range(1, len(channels) + 1):
            self.add_module(f"refinenet{level}", _FusionBlock(features, with_skip=level < len(channels)))
        # MiDaS's head, index for index: 0 conv, 1 upsample, 2 conv, 3 ReLU, 4 conv 1x1, 5 ReLU
        self.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            Interpolate(scale_factor=2.0, mode="bilinear"),
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(),  # not in-place: hooks that record a conv's output must see it unclipped
            nn.Conv2d(32, 1, 1),
            nn.ReLU(),
        )


class TinyMidas(nn.Module):
    """A small MiDaS-style network: RGB ``[B, 3, H, W]`` -> relative inverse depth ``[B, H, W]``.

    ``H`` and ``W`` must be multiples of 32. The input is the normalised image (see the
    checkpoint's ``meta["normalization"]``); the output is disparity up to an unknown scale
    and shift, non-negative because of the final ReLU, as in MiDaS.

    Args:
        channels: encoder widths of the four strided stages (outputs at 1/4 ... 1/32).
        features: width of the decoder (``scratch``); even, because the head halves it.
        stem: width of the stride-2 stem conv in front of the stages.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 96), features: int = 32, stem: int = 16) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) != 4 or min(channels) < 1:
            raise ValueError(f"TinyMidas needs four positive encoder widths, got {channels}")
        if features < 2 or features % 2:
            raise ValueError(f"TinyMidas needs an even decoder width >= 2, got {features}")
        self.config: dict[str, Any] = {"channels": channels, "features": int(features), "stem": int(stem)}
        self.stem = _conv_bn_relu(3, int(stem), stride=2)
        widths = [int(stem), *channels]
        self.stages = nn.ModuleList(_Stage(cin, cout) for cin, cout in pairwise(widths))
        self.scratch = _Scratch(channels, int(features))

    def features(self, x: Tensor) -> Tensor:
        """Everything before ``scratch.output_conv``: ``[B, features, H/2, W/2]``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"TinyMidas expects [B, 3, H, W] images, got shape {tuple(x.shape)}")
        if x.shape[-2] % MULTIPLE or x.shape[-1] % MULTIPLE:
            raise ValueError(f"TinyMidas needs H and W to be multiples of {MULTIPLE}, got {tuple(x.shape[-2:])}")
        levels = []
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
            levels.append(h)
        s = self.scratch
        l1, l2, l3, l4 = s.layer1_rn(levels[0]), s.layer2_rn(levels[1]), s.layer3_rn(levels[2]), s.layer4_rn(levels[3])
        path = s.refinenet4(l4)
        path = s.refinenet3(path, l3)
        path = s.refinenet2(path, l2)
        return s.refinenet1(path, l1)

    def head(self, features: Tensor) -> Tensor:
        """``scratch.output_conv`` on :meth:`features` output: disparity ``[B, H, W]``."""
        return self.scratch.output_conv(features).squeeze(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _plain(value: Any) -> Any:
    """numpy arrays and scalars -> lists and numbers, recursively: ``weights_only`` loads refuse numpy."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def save_checkpoint(model: TinyMidas, path: str | Path, **meta: Any) -> Path:
    """Write ``model`` with its constructor config and ``meta`` (plain Python values) to ``path``.

    ``meta`` usually holds ``normalization`` (``{"mean": [...], "std": [...]}``), ``input_size``
    and how the model was trained. Values must be loadable with ``weights_only=True``:
    numbers, strings, lists, dicts, tensors (numpy values are turned into lists and numbers).
    """
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "config": dict(model.config), "state_dict": state, "meta": _plain(dict(meta))}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a :func:`save_checkpoint` file; any problem is a one-line UsageError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"TinyMidas checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{path} is not a readable torch checkpoint ({first[:200]})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise UsageError(f"{path} is not a TinyMidas checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise UsageError(f"{path}: TinyMidas checkpoint lacks its 'config' or 'state_dict'")
    payload.setdefault("meta", {})
    return payload


def load_checkpoint(path: str | Path) -> TinyMidas:
    """Rebuild the :class:`TinyMidas` saved at ``path`` (in eval mode, on the CPU).

    The checkpoint's ``meta`` dict is attached as ``model.meta``.
    """
    payload = read_checkpoint(path)
    try:
        model = TinyMidas(**payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0]
        raise UsageError(f"{path}: TinyMidas checkpoint does not match its config ({first[:200]})") from err
    model.meta = dict(payload["meta"])
    return model.eval()
