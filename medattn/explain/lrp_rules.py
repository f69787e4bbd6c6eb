"""The LRP rule table for medattn's CNNs, on top of captum's ``LRP``.

Layer-wise relevance propagation: Bach et al., "On Pixel-Wise Explanations for Non-Linear
Classifier Decisions by Layer-Wise Relevance Propagation", PLoS ONE 2015; rules and their choice
after Montavon et al., "Layer-Wise Relevance Propagation: An Overview", in *Explainable AI*, LNCS
11700, 2019. captum's implementation starts from the target logit and applies, per leaf module,
``R_in = x ⊙ ∂(R_out / z)`` (the z/ε-rule as a modified gradient).

Rule table (exact module types; every leaf module of the six CNNs and of the ECA block is listed,
any other leaf type raises a :class:`~medattn.errors.ConfigError` naming it):

=======================================  ==========================  =======================================
module                                   rule                        why
=======================================  ==========================  =======================================
``nn.Conv2d``, ``nn.Conv1d``,            ε-rule (ε = ``epsilon``,    Montavon et al.'s rule for weighted
``nn.Linear``                            default 1e-9)               layers; with tiny ε it is LRP-0 and
                                                                     conservative up to what the bias takes
                                                                     (the CNNs' convs have no bias; the
                                                                     head's bias absorbs its share).
``nn.BatchNorm2d``                       pass-through:               in eval mode BN is a per-channel affine
                                         :class:`BatchNormPassRule`  map; its shift is a bias and would absorb
                                         (ε-rule on the bias-free    or flip relevance where it cancels the
                                         part ``γ/σ · x``)           input. Relevance passes unchanged,
                                                                     as if BN were folded into its conv.
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

Conservation that follows (and is tested): every rule above conserves relevance up to ε, except
that a bias absorbs its share. In the six CNNs the only bias on the relevance path is the head's,
so ``Σ R_input ≈ logit_t − b_t`` (``b_t`` the head bias of the target class).

Why a subclass of captum's ``LRP``: captum looks default rules up by exact type and raises on types
without one (``Identity``, ``Sigmoid``, custom modules), and it writes ``rule``/``activations``
attributes onto the model. medattn sets its rules explicitly on a private deep copy of the model,
and :class:`RuleTableLRP` only overrides which leaf modules captum visits (so reshape/identity
modules are left to autograd). :class:`GateRule` and :class:`BatchNormPassRule` are the two small
rules captum does not have.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from captum.attr import LRP
from captum.attr._utils.lrp_rules import EpsilonRule, PropagationRule
from torch import Tensor, nn

from medattn.errors import ConfigError


class GateRule(EpsilonRule):
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


class BatchNormPassRule(EpsilonRule):
    """Pass-through for ``BatchNorm2d`` that keeps captum's gradient×input convention.

    captum's ``IdentityRule`` returns the stored output relevance from the input hook, which
    discards the other consumers' contributions when the BN input is shared; here the output hook
    instead divides by the bias-free part ``z = y − shift = γ/σ · x``, so that after BN's backward
    (× γ/σ) and captum's input hook (× x) the input receives ``R · z / (z + ε) ≈ R``.
    """

    def forward_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], outputs: Tensor) -> Tensor:
        """Remember this module's shift before captum registers the tensor hooks."""
        var, mean = module.running_var, module.running_mean
        weight = module.weight if module.weight is not None else torch.ones_like(var)
        bias = module.bias if module.bias is not None else torch.zeros_like(mean)
        self._shift = (bias - mean * weight / torch.sqrt(var + module.eps)).detach().view(1, -1, 1, 1)
        return super().forward_hook(module, inputs, outputs)

    def _create_backward_hook_output(self, outputs: Tensor) -> Callable[[Tensor], Tensor]:
        z = outputs - self._shift

        def hook(grad: Tensor) -> Tensor:
            sign = torch.sign(z)
            sign[sign == 0] = 1
            self.relevance_output[grad.device] = grad.data
            return grad / (z + sign * self.STABILITY_FACTOR)

        return hook


#: Leaf modules left to autograd (identity or reshape: relevance passes unchanged).
NOT_VISITED: tuple[type[nn.Module], ...] = (nn.Identity, nn.Flatten)
#: Leaf modules captum itself treats as pass-through non-linearities (no rule object attached).
CAPTUM_PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.ReLU, nn.Dropout)


def _rule_table(epsilon: float) -> dict[type[nn.Module], Callable[[], PropagationRule]]:
    """Module type -> rule factory (see the module docstring for the reasons)."""
    from medattn.models.layers import Add, ChannelPool, GateMul

    def eps() -> PropagationRule:
        return EpsilonRule(epsilon=epsilon)

    return {
        nn.Conv1d: eps,
        nn.Conv2d: eps,
        nn.Linear: eps,
        nn.BatchNorm2d: lambda: BatchNormPassRule(epsilon=epsilon),
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


def attach_rules(model: nn.Module, epsilon: float = 1e-9) -> None:
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
