"""Training stage: fit one registered model on one outer fold and write its artifacts.

Submodules: ``fit`` (fold logic, seeds, predictions, card: ``train_model``) and ``checkpoint``.
The torch loop and its data live in :mod:`brainage.torchloop`, below both this stage and
:mod:`brainage.models`.
"""
