"""Inputs fetched or built before preprocessing: atlases (and, later, INDI datasets)."""
