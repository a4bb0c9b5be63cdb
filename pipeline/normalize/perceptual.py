"""LPIPS, loaded from local files only (method.md sections 2a and 7).

The ``lpips`` package ships the calibrated linear heads; the ImageNet backbone
(VGG16 or AlexNet) is torchvision's released state dict, which the package would
normally download. Here the backbone comes from a file the operator installed,
is loaded strictly, and is checked tensor by tensor after copying, so a
truncated or mismatched file fails loudly instead of giving a silently wrong
metric. A random backbone is allowed only when asked for explicitly (tests,
demos); the model then says so in ``identity`` so results can be labelled
non-clinical.

Images are tensors [N, 3, H, W] in [-1, 1].
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lpips
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pipeline.errors import ModelError
from pipeline.hashing import file_sha256

#: torchvision's release file names; the 8 hex digits are the SHA-256 prefix of the file.
TORCHVISION_BACKBONE_FILES: dict[str, str] = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
}
_LPIPS_VERSION = "0.1"
#: Side above which images are area-downsampled before LPIPS (method.md 2a).
LPIPS_MAX_SIDE = 256


@dataclass(frozen=True)
class LpipsIdentity:
    """What a distance was computed with, for labelling results.

    Attributes:
        net: "vgg" or "alex".
        lpips_version: version of the linear heads ("0.1").
        random_backbone: True when the backbone is randomly initialised (non-clinical).
        backbone_sha256: SHA-256 of the backbone file, None for a random backbone.
        backbone_is_torchvision_release: the hash matches torchvision's released file.
        heads_sha256: SHA-256 of the linear-head file shipped with ``lpips``.
    """

    net: str
    lpips_version: str
    random_backbone: bool
    backbone_sha256: str | None
    backbone_is_torchvision_release: bool
    heads_sha256: str

    @property
    def clinical(self) -> bool:
        """True only for torchvision's released ImageNet backbone."""
        return not self.random_backbone and self.backbone_is_torchvision_release


class LpipsModel(nn.Module):
    """A frozen ``lpips.LPIPS`` metric plus the identity of its weights.

    ``forward(x, y)`` returns the package's raw output: [N, 1, 1, 1] distances,
    or [N, 1, H, W] maps when ``spatial``. Use :func:`lpips_distance` /
    :func:`lpips_map` for checked inputs and the method's downsampling.
    """

    def __init__(self, metric: lpips.LPIPS, identity: LpipsIdentity, spatial: bool) -> None:
        super().__init__()
        self.metric = metric
        self.identity = identity
        self.spatial = spatial
        self.metric.requires_grad_(False)
        self.eval()

    @property
    def net(self) -> str:
        return self.identity.net

    @property
    def random_backbone(self) -> bool:
        return self.identity.random_backbone

    @property
    def backbone_sha256(self) -> str | None:
        return self.identity.backbone_sha256

    def train(self, mode: bool = True) -> LpipsModel:
        """LPIPS is a fixed metric: training mode (active dropout) is refused."""
        if mode:
            raise ValueError("LpipsModel is a fixed metric and cannot be put in training mode")
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.metric(x, y)


def torchvision_checkpoint_path(net: str, torch_home: Path) -> Path:
    """Where torchvision keeps the backbone file: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    _check_net(net)
    return Path(torch_home) / "hub" / "checkpoints" / TORCHVISION_BACKBONE_FILES[net]


def load_lpips(
    net: str = "vgg",
    backbone_weights: Path | None = None,
    *,
    allow_random_backbone: bool = False,
    spatial: bool = False,
    device: torch.device | str = "cpu",
) -> LpipsModel:
    """Build LPIPS v0.1 from local files, frozen and in eval mode.

    Args:
        net: "vgg" (the method's choice) or "alex".
        backbone_weights: torchvision's ImageNet state dict file for ``net``
            (``vgg16-397923af.pth`` or ``alexnet-owt-7be5be79.pth``).
        allow_random_backbone: permit ``backbone_weights=None``; the backbone is
            then randomly initialised with a fixed seed (non-clinical).
        spatial: return per-pixel maps instead of one distance per image.
        device: where the model lives.

    Raises:
        ModelError: missing, unreadable, truncated or mismatched weights.
        ValueError: unknown ``net``.
    """
    _check_net(net)
    if backbone_weights is None and not allow_random_backbone:
        filename = TORCHVISION_BACKBONE_FILES[net]
        raise ModelError(
            f"The clinical LPIPS needs torchvision's ImageNet {net} weights: copy {filename} "
            f"(from https://download.pytorch.org/models/{filename}) to $TORCH_HOME/hub/checkpoints/ "
            "and pass its path; a random backbone is only for tests and demos"
        )
    heads_path = Path(lpips.__file__).resolve().parent / "weights" / f"v{_LPIPS_VERSION}" / f"{net}.pth"

    # torchvision initialises layers from the global RNG: fork it so loading
    # neither depends on nor disturbs the caller's RNG state, and a random
    # backbone is the same every time.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(0)
        # lpips 0.1.4 passes the deprecated `pretrained=` argument to torchvision.
        warnings.filterwarnings("ignore", message=r".*(pretrained|weight enum).*", category=UserWarning)
        metric = lpips.LPIPS(
            net=net,
            version=_LPIPS_VERSION,
            lpips=True,
            spatial=spatial,
            pretrained=False,  # heads are loaded strictly below instead of with strict=False
            pnet_rand=True,  # no download: the backbone is copied in below
            verbose=False,
        )
    _load_heads(metric, heads_path)

    if backbone_weights is None:
        backbone_sha = None
    else:
        backbone_path = Path(backbone_weights)
        features = _read_backbone_features(backbone_path, net)
        _copy_features_into_slices(metric, features, backbone_path.name)
        backbone_sha = file_sha256(backbone_path)

    identity = LpipsIdentity(
        net=net,
        lpips_version=_LPIPS_VERSION,
        random_backbone=backbone_weights is None,
        backbone_sha256=backbone_sha,
        backbone_is_torchvision_release=(
            backbone_sha is not None and backbone_sha.startswith(TORCHVISION_BACKBONE_FILES[net].split("-")[-1][:8])
        ),
        heads_sha256=file_sha256(heads_path),
    )
    return LpipsModel(metric, identity, spatial).to(device)


def area_downsample(images: torch.Tensor, max_side: int = LPIPS_MAX_SIDE) -> torch.Tensor:
    """Area-downsample square images [N, C, S, S] to [N, C, max_side, max_side] when S > max_side."""
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if max(height, width) <= max_side:
        return images
    if height != width:
        raise ValueError(f"downsampling to {max_side}x{max_side} needs square images, got {height}x{width}")
    return F.interpolate(images, size=(max_side, max_side), mode="area")


def lpips_distance(
    model: LpipsModel, x: torch.Tensor, y: torch.Tensor, *, max_side: int | None = LPIPS_MAX_SIDE
) -> torch.Tensor:
    """LPIPS between images x and y [N, 3, H, W] in [-1, 1] -> [N]; differentiable.

    Both are area-downsampled to ``max_side`` when larger (None: never).
    """
    if model.spatial:
        raise ValueError("lpips_distance needs a model loaded with spatial=False; use lpips_map")
    x, y = _checked_pair(model, x, y)
    if max_side is not None:
        x, y = area_downsample(x, max_side), area_downsample(y, max_side)
    return model(x, y).reshape(x.shape[0])


@dataclass(frozen=True)
class LpipsTargetFeatures:
    """LPIPS's side of fixed targets, computed once: per backbone layer the unit-normalised features
    [N, C_l, H_l, W_l] (float32 or wider, no gradient), for images of ``side`` after downsampling
    to ``max_side`` (None: never)."""

    features: tuple[torch.Tensor, ...]
    side: int
    max_side: int | None

    @property
    def batch(self) -> int:
        return int(self.features[0].shape[0])


def lpips_target_features(
    model: LpipsModel, target: torch.Tensor, *, max_side: int | None = LPIPS_MAX_SIDE
) -> LpipsTargetFeatures:
    """The target half of :func:`lpips_distance` for target images [N, 3, H, W] in [-1, 1].

    ``lpips_distance_to_features(model, x, lpips_target_features(model, y))`` equals
    ``lpips_distance(model, x, y)`` and its gradient for x, with y's backbone pass done once.
    """
    _check_distance_model(model)
    target, _ = _checked_pair(model, target, target)
    if max_side is not None:
        target = area_downsample(target, max_side)
    with torch.no_grad():
        features = tuple(f.detach() for f in _unit_features(model, target))
    return LpipsTargetFeatures(features=features, side=int(target.shape[-1]), max_side=max_side)


def lpips_distance_to_features(model: LpipsModel, x: torch.Tensor, target: LpipsTargetFeatures) -> torch.Tensor:
    """LPIPS between images x [N, 3, H, W] in [-1, 1] and cached targets -> [N]; differentiable.

    x is area-downsampled like the targets were. Under autocast the backbone runs in
    the autocast dtype; normalisation, differences and the linear heads run in float32.
    """
    _check_distance_model(model)
    x, _ = _checked_pair(model, x, x)
    if target.max_side is not None:
        x = area_downsample(x, target.max_side)
    if x.shape[0] != target.batch or x.shape[-1] != target.side or x.shape[-2] != target.side:
        raise ValueError(f"x must be [{target.batch}, 3, {target.side}, {target.side}] after downsampling to match "
                         f"the target features, got {tuple(x.shape)}")
    features = _unit_features(model, x)
    metric = model.metric
    with torch.autocast(x.device.type, enabled=False):
        layer_terms = [
            lpips.lpips.spatial_average(metric.lins[kk]((features[kk] - target.features[kk]) ** 2), keepdim=True)
            for kk in range(metric.L)
        ]
        value = sum(layer_terms)  # 0 + first + second + ..., the package's order
    return value.reshape(x.shape[0])


def _unit_features(model: LpipsModel, images: torch.Tensor) -> list[torch.Tensor]:
    """The package's steps before the heads: scaling layer, backbone, channel-wise unit norm."""
    metric = model.metric
    outputs = metric.net.forward(metric.scaling_layer(images))
    wide = [out.to(torch.promote_types(out.dtype, torch.float32)) for out in outputs]
    return [lpips.normalize_tensor(out) for out in wide]


def _check_distance_model(model: LpipsModel) -> None:
    if not isinstance(model, LpipsModel) or model.spatial:
        raise ValueError(f"cached LPIPS distances need an LpipsModel loaded with spatial=False, "
                         f"got {type(model).__name__}")
    if getattr(model.metric, "version", None) != _LPIPS_VERSION or not getattr(model.metric, "lpips", False):
        raise ValueError("cached LPIPS distances need LPIPS v0.1 with its linear heads")


def lpips_map(
    model: LpipsModel, x: torch.Tensor, y: torch.Tensor, *, max_side: int | None = None
) -> torch.Tensor:
    """Per-pixel LPIPS [N, 1, H', W'] (H' = H unless downsampled to ``max_side``)."""
    if not model.spatial:
        raise ValueError("lpips_map needs a model loaded with spatial=True")
    x, y = _checked_pair(model, x, y)
    if max_side is not None:
        x, y = area_downsample(x, max_side), area_downsample(y, max_side)
    return model(x, y)


def _checked_pair(model: LpipsModel, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for name, images in (("x", x), ("y", y)):
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{name} must be [N, 3, H, W], got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"{name} must be floating point in [-1, 1], got {images.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    dtype = model.metric.scaling_layer.shift.dtype
    return x.to(dtype), y.to(dtype)


def _check_net(net: str) -> None:
    if net not in TORCHVISION_BACKBONE_FILES:
        raise ValueError(f"net must be one of {sorted(TORCHVISION_BACKBONE_FILES)}, got {net!r}")


def _load_state_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"{what} not found at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, not a torch file, unsafe pickle
        raise ModelError(f"{what} at {path} cannot be read as a torch state dict: {error}") from error
    if not isinstance(state, Mapping):
        raise ModelError(f"{what} at {path} holds a {type(state).__name__}, not a state dict")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ModelError(f"{what} at {path}: entry {key!r} is not a named tensor")
    return dict(state)


def _check_against(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    """Same keys, same shapes, floating point; errors name the first offending key."""
    missing = [key for key in expected if key not in state]
    if missing:
        raise ModelError(f"{source}: missing tensor {missing[0]!r} ({len(missing)} missing in all)")
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise ModelError(f"{source}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} unexpected in all)")
    for key, reference in expected.items():
        if tuple(state[key].shape) != tuple(reference.shape):
            raise ModelError(
                f"{source}: tensor {key!r} has shape {tuple(state[key].shape)}, expected {tuple(reference.shape)}"
            )
        if not state[key].is_floating_point():
            raise ModelError(f"{source}: tensor {key!r} has dtype {state[key].dtype}, expected floating point")


def _load_heads(metric: lpips.LPIPS, heads_path: Path) -> None:
    state = _load_state_file(heads_path, "LPIPS linear heads")
    expected = {f"lin{index}.model.1.weight": lin.model[1].weight for index, lin in enumerate(metric.lins)}
    _check_against(state, expected, heads_path.name)
    for index, lin in enumerate(metric.lins):
        lin.model[1].load_state_dict({"weight": state[f"lin{index}.model.1.weight"]}, strict=True)


def _read_backbone_features(path: Path, net: str) -> nn.Sequential:
    """Load the torchvision state dict strictly into a torchvision model; return its ``features``."""
    state = _load_state_file(path, f"LPIPS {net} backbone weights")
    builder = torchvision.models.vgg16 if net == "vgg" else torchvision.models.alexnet
    with torch.device("meta"):  # shapes only: no time spent on a random initialisation
        reference = builder(weights=None)
    _check_against(state, reference.state_dict(), path.name)
    reference.load_state_dict(state, strict=True, assign=True)
    return reference.features


def _copy_features_into_slices(metric: lpips.LPIPS, features: nn.Sequential, source: str) -> None:
    """Copy torchvision ``features[i]`` into the LPIPS slice layer named ``i``; verify every tensor."""
    source_state = {f"features.{key}": value for key, value in features.state_dict().items()}
    copied: dict[str, torch.Tensor] = {}
    for slice_index in range(1, metric.net.N_slices + 1):
        for layer_index, layer in getattr(metric.net, f"slice{slice_index}").named_children():
            layer_state = {
                name: source_state[f"features.{layer_index}.{name}"]
                for name in layer.state_dict()
                if f"features.{layer_index}.{name}" in source_state
            }
            if set(layer_state) != set(layer.state_dict()):
                absent = sorted(set(layer.state_dict()) - set(layer_state))
                raise ModelError(f"{source}: no tensor for LPIPS layer features.{layer_index}.{absent[0]}")
            layer.load_state_dict(layer_state, strict=True)
            for name, value in layer.state_dict().items():
                copied[f"features.{layer_index}.{name}"] = value
    not_copied = sorted(set(source_state) - set(copied))
    if not_copied:
        raise ModelError(f"{source}: backbone tensor {not_copied[0]!r} has no place in LPIPS")
    for key, value in copied.items():
        if not torch.equal(value, source_state[key].to(value.dtype)):
            raise ModelError(f"{source}: tensor {key!r} differs after copying into LPIPS")
    lpips_backbone_count = len(metric.net.state_dict())
    if lpips_backbone_count != len(copied):
        raise ModelError(
            f"{source}: copied {len(copied)} backbone tensors but LPIPS has {lpips_backbone_count}"
        )
