"""Per-subject extraction: denoised ROI series and downsampled volumes from one pass over the BOLD."""

from brainage.extract.subject import extract_subject

__all__ = ["extract_subject"]
