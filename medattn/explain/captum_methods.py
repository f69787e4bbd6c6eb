"""Gradient-based explainers for the CNNs, through captum.

- **DeepLIFT**: Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating
  Activation Differences", ICML 2017 (captum's ``DeepLift``, rescale rule, zero baseline by
  default, which for ImageNet-normalised inputs is the dataset-mean image).
- **LRP**: Bach et al. 2015, Montavon et al. 2019 (captum's ``LRP`` with medattn's rule table,
  see :mod:`medattn.explain.lrp_rules`).
- **Integrated Gradients**: Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks",
  ICML 2017 (captum's ``IntegratedGradients``).
- **Grad-CAM**: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization", ICCV 2017 (captum's ``LayerGradCam`` on the last feature map).

All of them run on a private deep copy of the model in eval mode, in the dtype of the images
(:func:`medattn.explain.attribute` always passes float32; float64 is for precision checks): captum's
DeepLift and LRP put hooks and attributes (``rule``, ``activations``, ``input``/``output``) on the
modules they visit and LRP reloads the state_dict, and LRP first folds BatchNorm into the
convolutions before it (:mod:`medattn.explain.canonize`), so the user's model is never handed to
them. The copy costs one model's worth of memory per call.

DeepLIFT completeness (Σ attributions = f(x) − f(baseline), for the target logit) holds exactly
for networks whose non-linearities are ReLU/Sigmoid/MaxPool modules; the CBAM channel max pool and
``ChannelPool`` fall back to plain gradients in captum, so for the CBAM models it is approximate.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from medattn.errors import ConfigError
from medattn.explain.base import Explainer, is_vit, register
from medattn.explain.canonize import fold_batchnorm


def working_copy(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """An eval-mode deep copy in ``dtype`` (float32 by default) that captum may hook and annotate freely."""
    return copy.deepcopy(model).to(dtype).eval()


def _input(x: Tensor) -> Tensor:
    """A fresh leaf that requires grad (captum would otherwise warn that it set the flag itself)."""
    return x.detach().clone().requires_grad_(True)


def _baseline(x: Tensor, baseline: object) -> Tensor:
    """``"zeros"`` (the normalised mean image), a float fill value, or a tensor broadcastable to ``x``."""
    if isinstance(baseline, str):
        if baseline != "zeros":
            raise ConfigError(f"baseline must be 'zeros', a number or a tensor, got {baseline!r}.")
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, Tensor):
        return baseline.to(x).expand_as(x).contiguous()
    raise ConfigError(f"baseline must be 'zeros', a number or a tensor, got {type(baseline).__name__}.")


class _CNNExplainer(Explainer):
    applies_to_text = "the CNN models (densenet121, resnet50 and their SE/CBAM variants)"

    def applies_to(self, model: nn.Module) -> bool:
        return not is_vit(model)


@register
class DeepLiftExplainer(_CNNExplainer):
    """DeepLIFT (rescale rule) attributions, ``(B, 3, H, W)``."""

    name = "deeplift"

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, *, baseline: object = "zeros") -> Tensor:
        """DeepLIFT attributions of the target logits.

        Args:
            model: a CNN (left unchanged).
            x: ``(B, 3, H, W)`` float32 images.
            target: ``(B,)`` class indices.
            baseline: ``"zeros"`` (default), a fill value, or a tensor broadcastable to ``x``.

        Returns:
            ``(B, 3, H, W)``; each image's sum ≈ logit(x) − logit(baseline).
        """
        # captum loads when an explanation is computed, not when the method names are listed (the command line's --help)
        from captum.attr import DeepLift

        net = working_copy(model, x.dtype)
        with warnings.catch_warnings():
            # captum announces that it hooks the (private copy's) activations; nothing to act on.
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
            return DeepLift(net).attribute(_input(x), baselines=_baseline(x, baseline), target=target)


@register
class LRPExplainer(_CNNExplainer):
    """LRP with medattn's rule table (:mod:`medattn.explain.lrp_rules`), ``(B, 3, H, W)``."""

    name = "lrp"

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor, *, epsilon: float | None = None) -> Tensor:
        """LRP relevance of the target logits.

        Args:
            model: a CNN (left unchanged; the rules go on a private copy).
            x: ``(B, 3, H, W)`` float32 images (float64 runs the whole propagation in float64).
            target: ``(B,)`` class indices.
            epsilon: ε of the ε-rules (``None``: :data:`~medattn.explain.lrp_rules.DEFAULT_EPSILON`
                = 1e-6, see :mod:`medattn.explain.lrp_rules`).

        Returns:
            ``(B, 3, H, W)``; each image's sum ≈ logit minus the relevance the biases absorb (head
            bias and BatchNorm shifts; see :mod:`medattn.explain.lrp_rules`).
        """
        # captum (which lrp_rules subclasses) loads when an explanation is computed, not when the names are listed
        from medattn.explain.lrp_rules import DEFAULT_EPSILON, RuleTableLRP, attach_rules

        net = working_copy(model, x.dtype)
        fold_batchnorm(net, x[:1])  # conv → BN as one conv: no division by pre-BN outputs (see canonize)
        attach_rules(net, epsilon=DEFAULT_EPSILON if epsilon is None else epsilon)
        return RuleTableLRP(net).attribute(_input(x), target=target)


@register
class IntegratedGradientsExplainer(Explainer):
    """Integrated Gradients along the straight path from a baseline, ``(B, 3, H, W)``; any model."""

    name = "integrated-gradients"
    applies_to_text = "any model"

    def applies_to(self, model: nn.Module) -> bool:
        return True

    def attribute(
        self, model: nn.Module, x: Tensor, target: Tensor, *, baseline: object = "zeros", n_steps: int = 32
    ) -> Tensor:
        """Integrated Gradients (Gauss-Legendre, ``n_steps`` points) of the target logits.

        Args:
            model: any classifier (left unchanged).
            x: ``(B, 3, H, W)`` float32 images.
            target: ``(B,)`` class indices.
            baseline: ``"zeros"`` (default), a fill value, or a tensor broadcastable to ``x``.
            n_steps: integration points; memory grows with ``B * n_steps``.

        Returns:
            ``(B, 3, H, W)``.
        """
        net = working_copy(model)
        # captum loads when an explanation is computed, not when the method names are listed (the command line's --help)
        from captum.attr import IntegratedGradients

        return IntegratedGradients(net).attribute(
            _input(x), baselines=_baseline(x, baseline), target=target, n_steps=n_steps, internal_batch_size=x.shape[0]
        )


@register
class GradCamExplainer(_CNNExplainer):
    """Grad-CAM on the last feature map, upsampled bilinearly to the image, ``(B, 1, H, W)``."""

    name = "gradcam"

    def attribute(self, model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
        """Grad-CAM (ReLU of the gradient-weighted channel sum) of the target logits.

        Args:
            model: a medattn CNN with ``layer4`` (ResNet) or ``features`` (DenseNet).
            x: ``(B, 3, H, W)`` float32 images.
            target: ``(B,)`` class indices.

        Returns:
            ``(B, 1, H, W)`` non-negative maps (one channel: Grad-CAM has no per-colour values).
        """
        net = working_copy(model)
        layer = getattr(net, "layer4", None)
        layer = getattr(net, "features", None) if layer is None else layer
        if layer is None:
            raise ConfigError(f"gradcam needs a model with 'layer4' or 'features', not {type(model).__name__}.")
        # captum loads when an explanation is computed, not when the method names are listed (the command line's --help)
        from captum.attr import LayerAttribution, LayerGradCam

        cam = LayerGradCam(net, layer).attribute(_input(x), target=target, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
