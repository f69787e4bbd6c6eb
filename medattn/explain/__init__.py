"""Explanations for medattn's models: attribution methods and their quantitative scores.

- :func:`attribute` / :data:`EXPLAINERS` / :func:`methods_for`: DeepLIFT, LRP (rule table in
  :mod:`medattn.explain.lrp_rules`; BatchNorm folded into the conv before it by
  :mod:`medattn.explain.canonize`), Integrated Gradients and Grad-CAM for the CNNs via captum;
  transformer attribution (Chefer et al. 2021) for DeiT in :mod:`medattn.explain.transformer_lrp`.
- :mod:`medattn.explain.removal` (deletion/insertion AUC, ROAD), :mod:`medattn.explain.localisation`
  (pointing game, relevance mass inside a mask), :mod:`medattn.explain.sanity` (baselines, the pass
  rule) and :mod:`medattn.explain.evaluation` (all of them for a batch), and the same scores for
  random maps.

Every module of this package that registers an explainer (``@register``) is imported on the first
look-up in :data:`EXPLAINERS` (:mod:`medattn.registry`), so a new such file needs no import here.
"""

from medattn.explain.base import EXPLAINERS, Explainer, attribute, methods_for
from medattn.explain.localisation import mask_relevance_mass, pointing_game
from medattn.explain.removal import DeletionInsertion, deletion_insertion, random_baseline_scores

__all__ = [
    "EXPLAINERS",
    "DeletionInsertion",
    "Explainer",
    "attribute",
    "deletion_insertion",
    "mask_relevance_mass",
    "methods_for",
    "pointing_game",
    "random_baseline_scores",
]
