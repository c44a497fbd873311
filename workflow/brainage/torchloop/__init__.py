"""The torch training loop and its data, shared by ``brainage.models``, ``brainage.train`` and ``brainage.pretrain``.

Submodules: ``data`` (Parquet inputs, windows, torch Dataset), ``batches`` (where windows are cut:
on the device or in loader workers), ``loop`` (the shared train/predict loop, determinism, device
and version records). It imports no other stage, so models and the training stage can both use it
without importing each other.
"""
