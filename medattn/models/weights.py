"""Initial weights: reading local checkpoints, fetching ImageNet weights, loading them with a report.

The rule (a fair comparison of attention variants): weights initialise the *backbone* of every variant. A tensor of the model may
stay at its fresh initialisation only when it belongs to an attention module or to the head; a
tensor of the source may be ignored only when it belongs to the source's head (``fc.*``,
``classifier.*``, ``head.*``; ImageNet's 1000-class head) or, for DeiT with fewer blocks than
the source, to the blocks beyond ``nr_layers``. Anything else means the file belongs to another
architecture, and loading is refused with a :class:`~medattn.errors.ConfigError` before the
model is touched.
"""

from __future__ import annotations

import logging
import pickle
import re
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from torch import Tensor, nn

from medattn.errors import ConfigError
from medattn.models.attention import is_attention_module
from medattn.registry import lookup, normalize

log = logging.getLogger(__name__)

BACKBONE_HEADS = {"resnet50": "fc", "densenet121": "classifier", "deit_tiny": "head"}
"""The head attribute of each backbone family (its keys may start fresh)."""

SOURCE_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "head_dist.")
"""Source keys that may be left unused: the classifier of whatever the weights were trained for."""

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel and torch.compile wrappers
# torchvision's DenseNet checkpoints predate dots being banned in module names: 'norm.1' -> 'norm1'.
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)
_SIGNATURES = {
    "resnet50": "layer1.0.conv1.weight",
    "densenet121": "features.denseblock1.denselayer1.conv1.weight",
    "deit_tiny": "blocks.0.attn.qkv.weight",
}


@dataclass(frozen=True)
class WeightsReport:
    """What loading a state_dict did.

    Attributes:
        source: where the weights came from (a path or ``imagenet:<name>``).
        arch: the model's backbone family (``resnet50``, ``densenet121``, ``deit_tiny``).
        loaded: model keys set from the source.
        missing: model keys left at their fresh initialisation (attention modules, head).
        unexpected: source keys not used (source head, DeiT blocks beyond ``nr_layers``).
        shape_dropped: source head keys dropped because their shape differs (e.g. 1000 classes).
        resized: source keys resampled to the model's shape (DeiT ``pos_embed`` at another size).
    """

    source: str
    arch: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    shape_dropped: tuple[str, ...]
    resized: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for logs: counts and the first few keys of each kind."""

        def some(keys: tuple[str, ...]) -> str:
            return ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")

        parts = [f"loaded {len(self.loaded)} tensors from {self.source} into {self.arch}"]
        for label, keys in (
            ("kept at init", self.missing),
            ("unused", self.unexpected),
            ("dropped for shape", self.shape_dropped),
            ("resampled", self.resized),
        ):
            if keys:
                parts.append(f"{label} {len(keys)} ({some(keys)})")
        return "; ".join(parts)


def _family(arch: str) -> str:
    """The backbone family of a family name or a registered model name (``se_resnet50`` → ``resnet50``)."""
    key = normalize(arch)
    for family in BACKBONE_HEADS:
        if normalize(family) == key:
            return family
    # The model registry is filled by models.factory, which imports this module: look it up by kind
    # (medattn.registry) instead of importing factory back.
    return lookup("model").get(arch).backbone


def clean_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """Tensors only, wrapper prefixes stripped, torchvision's legacy DenseNet keys renamed.

    Args:
        state_dict: a mapping from parameter names to tensors (other values are ignored).

    Returns:
        A new ``dict`` with the cleaned keys.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            continue
        key = str(key)
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        match = _DENSENET_LEGACY.match(key)
        if match:
            key = match.group(1) + match.group(2)
        out[key] = value
    return out


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state_dict from a local file.

    Accepts a raw state_dict, ``{"state_dict": ...}``, ``{"model_state_dict": ...}``,
    ``{"model": ...}`` (official DeiT, timm and medattn checkpoints), a pickled module's
    ``state_dict`` inside any of those, and ``.safetensors`` files (timm's Hugging Face format).

    Args:
        path: the file.

    Returns:
        The cleaned state_dict (see :func:`clean_state_dict`).

    Raises:
        ConfigError: the file is missing, unreadable or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file '{path}' does not exist; pass an existing file with --weights PATH.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # optional: only .safetensors files need it

            obj: Any = load_file(str(path), device="cpu")
        else:
            # weights_only: a weights file from elsewhere must not be able to run code.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        text = str(exc)
        if "Unsupported global" in text:
            # A pickle that needs arbitrary classes: refuse rather than execute foreign code.
            raise ConfigError(
                f"weights file '{path}' holds Python objects that cannot be loaded safely; "
                "save just the tensors with torch.save(model.state_dict(), PATH)."
            ) from None
        raise ConfigError(
            f"cannot read weights file '{path}' ({exc.__class__.__name__}); pass a PyTorch state_dict / checkpoint "
            "or a .safetensors file with --weights PATH."
        ) from None
    for _ in range(3):  # checkpoints nest at most a couple of levels ({"model": {"state_dict": ...}})
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj), None)
            if inner is None:
                break
            obj = inner
    state = clean_state_dict(obj) if isinstance(obj, Mapping) else {}
    if not state:
        raise ConfigError(f"weights file '{path}' holds no state_dict (no tensors found).")
    return state


def guess_architecture(state_dict: Mapping[str, Any]) -> str | None:
    """The backbone family a state_dict looks like (``resnet50``, ``densenet121``, ``deit_tiny``)."""
    keys = set(clean_state_dict(state_dict))
    return next((family for family, key in _SIGNATURES.items() if key in keys), None)


def _extra_deit_block(key: str, depth: int) -> bool:
    match = re.match(r"^blocks\.(\d+)\.", key)
    return bool(match) and int(match.group(1)) >= depth


def load_weights(
    model: nn.Module, state_dict: Mapping[str, Any], *, arch: str, source: str = "state_dict"
) -> WeightsReport:
    """Load backbone weights into ``model`` under the attention-and-head-only rule.

    Args:
        model: a model built by :func:`medattn.models.create_model` (or the builders).
        state_dict: source tensors (wrapper prefixes and legacy DenseNet keys are handled).
        arch: the model's registry name or backbone family (``se_resnet50`` or ``resnet50``).
        source: a label for messages and the report (path or ``imagenet:<name>``).

    Returns:
        A :class:`WeightsReport`; the model is modified in place.

    Raises:
        ConfigError: a backbone tensor of the model has no counterpart of the same shape in the
            source, or the source has tensors outside its head that the model does not use.
            The model is left untouched in that case.
    """
    family = _family(arch)
    head_prefix = BACKBONE_HEADS[family] + "."
    source_sd = clean_state_dict(state_dict)
    target = model.state_dict()
    fresh_prefixes = tuple(f"{n}." for n, m in model.named_modules() if n and is_attention_module(m)) + (head_prefix,)
    depth = len(model.blocks) if family == "deit_tiny" and hasattr(model, "blocks") else 0

    to_load: dict[str, Tensor] = {}
    unexpected, shape_dropped, resized, bad_shape = [], [], [], []
    for key, value in source_sd.items():
        if key not in target:
            unexpected.append(key)
        elif target[key].shape == value.shape:
            to_load[key] = value
        elif key == "pos_embed" and family == "deit_tiny":
            to_load[key] = _resample_pos_embed(value, target[key])
            resized.append(key)
        elif key.startswith(head_prefix):
            shape_dropped.append(key)
        else:
            bad_shape.append(f"{key} {tuple(value.shape)} vs {tuple(target[key].shape)}")
    # BatchNorm fills a missing num_batches_tracked itself (old torchvision files lack it).
    missing = [k for k in target if k not in to_load and not k.endswith("num_batches_tracked")]
    bad_missing = [k for k in missing if not k.startswith(fresh_prefixes)]
    bad_unexpected = [
        k for k in unexpected if not (k.startswith(SOURCE_HEAD_PREFIXES) or (depth and _extra_deit_block(k, depth)))
    ]
    if bad_missing or bad_unexpected or bad_shape:
        raise ConfigError(_refusal(source, family, source_sd, bad_missing, bad_unexpected, bad_shape))

    model.load_state_dict(to_load, strict=False)
    report = WeightsReport(
        source=source,
        arch=family,
        loaded=tuple(to_load),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        shape_dropped=tuple(shape_dropped),
        resized=tuple(resized),
    )
    log.info(report.summary())
    return report


def _refusal(
    source: str,
    family: str,
    source_sd: Mapping[str, Tensor],
    missing: list[str],
    unexpected: list[str],
    shape: list[str],
) -> str:
    guess = guess_architecture(source_sd)
    if guess and guess != family:
        return (
            f"weights {source} look like a {guess} state_dict and do not fit {family} "
            f"({len(missing)} backbone tensors missing, e.g. {missing[0] if missing else '-'}); "
            f"pass a {family} file with --weights PATH."
        )
    details = []
    if missing:
        details.append(f"{len(missing)} backbone tensors missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected tensors outside the head (e.g. {', '.join(unexpected[:3])})")
    if shape:
        details.append(f"{len(shape)} tensors of another shape (e.g. {shape[0]})")
    return (
        f"weights {source} do not fit {family}: {'; '.join(details)}; only attention modules and the head "
        "may differ from the backbone, so pass a matching file with --weights PATH."
    )


def _resample_pos_embed(source: Tensor, target: Tensor) -> Tensor:
    """Bicubic resampling of DeiT's position embedding to another token grid (as timm does)."""
    from timm.layers import resample_abs_pos_embed  # heavy: only DeiT at another image size needs it

    side = int(round((target.shape[1] - 1) ** 0.5))
    return resample_abs_pos_embed(source, new_size=[side, side], num_prefix_tokens=1)


_IMAGENET_TIMM = {"deit_tiny": "deit_tiny_patch16_224"}
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a Hugging Face repo, in order

DOWNLOAD_PROBE_TIMEOUT_S = 3.0
"""Seconds the connection probe waits before a download is declared impossible (the
Hugging Face hub otherwise retries for about 50 s, where torchvision fails at once)."""


def unreachable(url: str, timeout: float = DOWNLOAD_PROBE_TIMEOUT_S) -> str | None:
    """Why ``url`` cannot be reached (through the proxy the environment names); ``None`` when it answers.

    Any HTTP answer, even an error status, counts as reachable. The whole request, name resolution
    included, is bounded by ``timeout``: it runs in a daemon thread, because ``getaddrinfo`` has
    no timeout of its own.
    """
    outcome: list[BaseException | None] = []

    def request() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):  # noqa: S310 - a fixed https URL
                pass
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except (OSError, ValueError) as exc:
            outcome.append(exc)

    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    worker.join(timeout)
    host = urlsplit(url).hostname
    if not outcome:
        return f"no answer from {host} within {timeout:g} s"
    exc = outcome[0]
    if exc is None:
        return None
    reason = getattr(exc, "reason", exc)
    return f"no connection to {host}: {getattr(reason, 'strerror', None) or reason}"


def published_weights(backbone: str) -> tuple[str, Path | None]:
    """Where the ImageNet weights of ``backbone`` come from, and the cached file if one exists.

    Returns:
        ``(url, cached)``: the download URL (torchvision) or Hugging Face repository (timm), and
        the file in the torch hub / Hugging Face cache (``None`` when not downloaded yet).
    """
    # Imported here: torchvision, timm and the hub client are needed only when weights are fetched.
    import torchvision

    if backbone in ("resnet50", "densenet121"):
        enum = torchvision.models.ResNet50_Weights if backbone == "resnet50" else torchvision.models.DenseNet121_Weights
        url = enum.IMAGENET1K_V1.url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(url).path).name
        return url, cached if cached.is_file() else None
    import huggingface_hub  # heavy, optional here: only DeiT's weights come from the hub
    import timm.models  # heavy: only DeiT's weights come from timm

    repo = timm.models.get_pretrained_cfg(_IMAGENET_TIMM[backbone]).hf_hub_id
    for name in _HUB_FILES:
        found = huggingface_hub.try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return f"{huggingface_hub.constants.ENDPOINT}/{repo}", Path(found)
    return f"{huggingface_hub.constants.ENDPOINT}/{repo}", None


def fetch_imagenet_state_dict(backbone: str) -> dict[str, Tensor]:
    """Download (or read from the torch/Hugging Face cache) the ImageNet weights of ``backbone``.

    ResNet-50 and DenseNet-121 use torchvision's ``IMAGENET1K_V1`` weights (those the original
    project got from ``pretrained=True``); DeiT-Tiny uses timm's ``deit_tiny_patch16_224``. A
    cached file is used without any network access; otherwise a connection probe
    (:func:`unreachable`) fails within :data:`DOWNLOAD_PROBE_TIMEOUT_S` seconds when the host
    cannot be reached, the same way for every model.

    Args:
        backbone: ``resnet50``, ``densenet121`` or ``deit_tiny``.

    Returns:
        The state_dict as published (1000-class head included).

    Raises:
        OSError: no network and nothing cached (``URLError``, Hugging Face hub errors).
    """
    import timm  # heavy: imported only when weights are fetched
    import torchvision  # heavy: imported only when weights are fetched

    url, cached = published_weights(backbone)
    reason = None if cached is not None else unreachable(url)
    if reason:
        raise OSError(reason)
    if backbone == "resnet50":
        return torchvision.models.ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
    if backbone == "densenet121":
        return torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
    overlay = {"pretrained_cfg_overlay": {"file": str(cached)}} if cached is not None else {}
    return timm.create_model(_IMAGENET_TIMM[backbone], pretrained=True, **overlay).state_dict()


def _download_errors() -> tuple[type[BaseException], ...]:
    # URLError, socket errors and the hub's LocalEntryNotFoundError / HfHubHTTPError are OSErrors
    # in current releases; the hub classes are listed in case a release stops deriving from it.
    errors: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError  # optional: may be absent

        errors += [HfHubHTTPError, LocalEntryNotFoundError]
    except ImportError:
        pass
    return tuple(errors)


def imagenet_state_dict(backbone: str, model_name: str) -> dict[str, Tensor]:
    """:func:`fetch_imagenet_state_dict` with the offline failure turned into one sentence.

    Args:
        backbone: ``resnet50``, ``densenet121`` or ``deit_tiny``.
        model_name: the model being built, for the message.

    Raises:
        ConfigError: the weights cannot be downloaded (names ``--weights`` and ``--pretrained none``).
    """
    try:
        return fetch_imagenet_state_dict(backbone)
    except _download_errors() as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ConfigError(
            f"cannot download the ImageNet weights for {model_name} ({reason}); on a machine without "
            "network pass a local weights file with --weights PATH, or train from scratch with --pretrained none."
        ) from None
