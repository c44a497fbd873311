"""Per-subject extraction: denoised ROI series and downsampled volumes from one pass over the BOLD.

The stage's function is :func:`brainage.extract.subject.extract_subject`. This package module
imports nothing: cnn_conn's training imports :mod:`brainage.extract.regions` (the atlas on the
volume grid), and the train stage's code hash follows imports, so importing the package must not
pull in the whole extraction (confounds, cleaning, motion QC).
"""
