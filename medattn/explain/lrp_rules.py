"""The LRP rule table for medattn's CNNs, on top of captum's ``LRP``.

Layer-wise relevance propagation: Bach et al., "On Pixel-Wise Explanations for Non-Linear
Classifier Decisions by Layer-Wise Relevance Propagation", PLoS ONE 2015; rules and their choice
after Montavon et al., "Layer-Wise Relevance Propagation: An Overview", in *Explainable AI*, LNCS
11700, 2019. captum's implementation starts from the target logit and applies, per leaf module,
``R_in = x ⊙ ∂(R_out / z)`` (the z/ε-rule as a modified gradient).

Rule table (exact module types; every leaf module of the six CNNs and of the ECA block is listed,
any other leaf type raises a :class:`~medattn.errors.ConfigError` naming it). The README's
"LRP rules, by layer type" table says the same; a test keeps the two in step:

=======================================  ==========================  =======================================
module                                   rule                        why
=======================================  ==========================  =======================================
``nn.Conv2d``, ``nn.Conv1d``,            ε-rule (ε = ``epsilon``,    Montavon et al.'s rule for weighted
``nn.Linear``                            default 1e-6, sign-aware    layers; conservative up to what the
                                         stabiliser)                 bias and ε take (the CNNs' convs have
                                                                     no bias; the head's bias absorbs its
                                                                     share).
``nn.BatchNorm2d`` after a conv          folded into that conv       in eval mode BN is a per-channel affine
(every BN of the ResNets, DenseNet's     (weight × γ/σ, the shift    map; conv → BN is one conv
``norm0`` and dense layers' ``norm2``)   becomes its bias), then     (canonization, as zennit/iNNvestigate
                                         the conv's ε-rule           do), done on the private copy by
                                                                     :mod:`medattn.explain.canonize`.
                                                                     Equal to the ε-rule on both up to ε,
                                                                     and stable in float32.
``nn.BatchNorm2d`` elsewhere             ε-rule on the affine map    no conv to fold into (after a
(after a concatenation or attention:     ``y = γ/σ·x + shift``       concatenation); the shift in the
DenseNet's ``norm1``, transitions,       (shift in the denominator)  denominator absorbs its share like
``norm5``)                                                           any bias.
``nn.ReLU``, ``nn.Dropout``              pass-through (captum's      relevance is redistributed by the next
                                         non-linear handling)        weighted layer; dropout is identity in
                                                                     eval mode.
``nn.MaxPool2d``,                        ε-rule                      winner-take-all: the whole relevance
``nn.AdaptiveMaxPool2d``                                             goes to the maximum (conservative).
``nn.AvgPool2d``,                        ε-rule                      proportional to the averaged inputs
``nn.AdaptiveAvgPool2d``                                             (conservative; linear layer).
``Add`` (residual sum, CBAM MLP sum)     ε-rule, two inputs          z-rule: each summand gets
                                                                     ``R · u / (u + w)`` (conservative).
``GateMul`` (``x * gate``)               :class:`GateRule`           the gate is treated as a constant:
                                                                     ``R_x = R`` (ε-rule on ``x``), the gate
                                                                     gets no relevance, so nothing flows into
                                                                     the attention branch (Sigmoid, its MLP,
                                                                     ``ChannelPool``, the spatial conv/BN).
``nn.Sigmoid``, ``ChannelPool``          ε-rule                      only inside gates, which receive zero
                                                                     relevance under :class:`GateRule`; the
                                                                     rule exists so captum accepts them.
``nn.Identity``, ``nn.Flatten``          not visited                 identity/reshape: autograd passes the
                                                                     relevance unchanged.
=======================================  ==========================  =======================================

Non-module arithmetic in the CNNs (``torch.cat`` in DenseNet and CBAM, ``torch.flatten``, slicing)
is handled by autograd, which routes relevance to the concatenated/sliced parts unchanged.

Stability, and why BatchNorm is not a pass-through (it was until the trained-model NaN bug):
captum propagates the *normalised* relevance ``c = R / (z + ε·sign(z))`` backwards. Under the
ε-rule every ``R`` at a ReLU output is ``a · c_next`` with ``a = relu(y)``, so ``R / y`` stays
bounded by the next layer's ``c``. A BN pass-through (``R_x = R_y``) breaks that coupling: the
conv before it divides ``R_y`` by its own output ``x = (y − shift)·σ/γ``, and in a *trained*
network the shifts are large, so units with ``y > 0`` (non-zero relevance) have ``x ≈ 0`` or
``x < 0``. Each such conv multiplies ``c`` by ``|y / x|`` (10–100× per bottleneck in a ResNet-50
trained for 3 epochs), ``c`` overflows float32 after ~40 layers, and ``inf · 0`` gives NaN maps.
At random initialisation the shifts are zero, ``x = y``, which is why tests on untrained models
passed. No ε small enough to keep LRP-0 conservative fixes that; folding the shift into the
denominator does, at the price that BN shifts absorb relevance like biases. Where a conv precedes
the BN, folding BN into that conv (:mod:`medattn.explain.canonize`) goes one step further: the
composed ε-rules still divide by the pre-BN conv output, the folded conv divides only by its own
output, which is small only where its relevance is small too.

ε: :data:`DEFAULT_EPSILON` = 1e-6 with the stabiliser ``z + ε·sign(z)``, ``sign(0) = 1`` (so no
denominator is ever 0 and the stabiliser never flips a sign). 1e-6 is ~1e-5 of the typical
``|z|`` of these fp32 networks: it keeps LRP-ε practically LRP-0 (conservation within the test
tolerances below) while removing the float32 noise of dividing by near-zero sums, which 1e-9
(captum's default, below fp32 resolution of ``z`` ≈ 1) does not.

Conservation that follows (and is tested): every rule above conserves relevance up to ε, except
that a bias absorbs its share ``b_j · R_j / y_j``. Hence

- with the BN shifts zero (``β = μ·γ/σ``, e.g. at initialisation) the only bias on the relevance
  path is the head's and ``Σ R_input = logit_t − b_t`` (tested on the six CNNs at init and on toy
  nets with gates, residual and max-pool; rtol 1e-3 with atol max(1e-4·max|logit|, 1e-5) on the
  zoo, rtol 1e-4 on the toys);
- in general ``Σ R_input = logit_t − b_t − (relevance absorbed by the BN shifts)``; the tests
  check the canonization identity instead: LRP of conv → BN equals LRP of the single folded conv
  with bias, within 1e-3 of the map maximum (the two differ only by ε at the conv output).
Why a subclass of captum's ``LRP``: captum looks default rules up by exact type and raises on types
without one (``Identity``, ``Sigmoid``, custom modules), and it writes ``rule``/``activations``
attributes onto the model. medattn sets its rules explicitly on a private deep copy of the model,
and :class:`RuleTableLRP` only overrides which leaf modules captum visits (so reshape/identity
modules are left to autograd). :class:`GateRule` is the one small rule captum does
not have; :class:`StableEpsilonRule` pins the stabiliser.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from captum.attr import LRP
from captum.attr._utils.lrp_rules import EpsilonRule, PropagationRule
from torch import Tensor, nn

from medattn.errors import ConfigError
from medattn.models.layers import Add, ChannelPool, GateMul

#: Default ε of every ε-rule (see the module docstring for why 1e-6).
DEFAULT_EPSILON = 1e-6


class StableEpsilonRule(EpsilonRule):
    """The ε-rule with an explicitly sign-aware stabiliser: ``R_in = x ⊙ ∂(R_out / (z + ε·sign(z)))``.

    ``sign(0) = 1``, so the denominator is never zero and never shrinks ``|z|``: a unit whose output
    is exactly 0 passes ``0 / ε = 0`` (its relevance, ``R_out = a·c`` with ``a = 0``, is zero
    anyway). captum's base rule does the same today; medattn states it here so that the rule table
    does not depend on a captum implementation detail.
    """

    def _create_backward_hook_output(self, outputs: Tensor) -> Callable[[Tensor], Tensor]:
        eps = self.STABILITY_FACTOR

        def hook(grad: Tensor) -> Tensor:
            stabiliser = torch.where(outputs >= 0, eps, -eps).to(outputs.dtype)
            self.relevance_output[grad.device] = grad.data
            return grad / (outputs + stabiliser)

        return hook


class GateRule(StableEpsilonRule):
    """ε-rule for ``GateMul(x, gate)`` with the gate held constant.

    Relevance of ``x * gate`` goes to ``x`` only (``R_x = x·g·R / (x·g + ε) ≈ R``); the gate input's
    gradient is replaced by zeros, so no relevance enters the attention branch. This is the usual
    treatment of multiplicative gates in LRP (as for LSTM gates, Arras et al. 2017): the gate
    modulates how much of ``x`` passes but is not itself evidence.
    """

    def forward_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], outputs: Tensor) -> Tensor:
        """captum's forward hook restricted to ``x``, plus a zeroing hook on the gate."""
        x, gate = inputs
        out = super().forward_hook(module, (x,), outputs)
        if gate.requires_grad:  # a gate computed from the input; a constant gate needs nothing
            self._handle_input_hooks.append(gate.register_hook(torch.zeros_like))
        return out


#: Leaf modules left to autograd (identity or reshape: relevance passes unchanged).
NOT_VISITED: tuple[type[nn.Module], ...] = (nn.Identity, nn.Flatten)
#: Leaf modules captum itself treats as pass-through non-linearities (no rule object attached).
CAPTUM_PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.ReLU, nn.Dropout)


def _rule_table(epsilon: float) -> dict[type[nn.Module], Callable[[], PropagationRule]]:
    """Module type -> rule factory (see the module docstring for the reasons)."""

    def eps() -> PropagationRule:
        return StableEpsilonRule(epsilon=epsilon)

    return {
        nn.Conv1d: eps,
        nn.Conv2d: eps,
        nn.Linear: eps,
        nn.BatchNorm2d: eps,
        nn.MaxPool2d: eps,
        nn.AdaptiveMaxPool2d: eps,
        nn.AvgPool2d: eps,
        nn.AdaptiveAvgPool2d: eps,
        Add: eps,
        GateMul: lambda: GateRule(epsilon=epsilon),
        nn.Sigmoid: eps,
        ChannelPool: eps,
    }


def _leaves(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if not list(m.children())]


def attach_rules(model: nn.Module, epsilon: float = DEFAULT_EPSILON) -> None:
    """Give every visited leaf of ``model`` (a private copy!) its rule as ``module.rule``.

    Args:
        model: the copy captum will run on; it is modified.
        epsilon: ε of the ε-rules.

    Raises:
        ConfigError: a leaf module type outside the rule table.
    """
    table = _rule_table(epsilon)
    unknown = set()
    for module in _leaves(model):
        kind = type(module)
        if kind in table:
            module.rule = table[kind]()
        elif kind not in NOT_VISITED + CAPTUM_PASS_THROUGH:
            unknown.add(kind.__name__)
    if unknown:
        raise ConfigError(
            f"lrp has no rule for module type(s) {', '.join(sorted(unknown))}; "
            "it explains medattn's CNNs (see medattn.explain.lrp_rules for the rule table)."
        )


class RuleTableLRP(LRP):
    """captum ``LRP`` that leaves :data:`NOT_VISITED` leaf modules to autograd.

    captum collects every leaf module and raises on ``nn.Identity``/``nn.Flatten``; both are
    identities for relevance, so they are skipped rather than given a rule (a rule on ``Identity``
    would put the input and output hooks on the same tensor, in the wrong order).
    """

    def _get_layers(self, model: nn.Module) -> None:
        for layer in model.children():
            if not list(layer.children()):
                if not isinstance(layer, NOT_VISITED):
                    self.layers.append(layer)
            else:
                self._get_layers(layer)
