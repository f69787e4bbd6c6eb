"""One module per lifecycle stage: ``train``, ``evaluate`` (the ``test`` command), ``interpret``,
``figures``, ``compare``, ``search``, ``promote``, ``demo``, ``grid``, ``bench``.

Each stage defines its own frozen config class (``train``'s ``TrainConfig`` and the parts the configs
share live in :mod:`medattn.config`), does its work, tracks it through
:mod:`medattn.tracking` and returns a plain result object. :mod:`medattn.api` re-exports them;
no stage imports :mod:`medattn.api`.
"""
