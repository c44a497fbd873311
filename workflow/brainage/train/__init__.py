"""Training stage: fit one registered model on one outer fold and write its artifacts.

Submodules: ``data`` (Parquet inputs, windows, torch Dataset), ``loop`` (shared torch loop),
``fit`` (fold logic, seeds, predictions, card: ``train_model``), ``checkpoint``. Nothing is
imported here, so ``brainage.models`` can use ``data`` and ``loop`` without an import cycle.
"""
