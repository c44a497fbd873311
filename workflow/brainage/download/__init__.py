"""Inputs fetched or built before preprocessing: atlases, INDI datasets and ABIDE PCP ROI series."""
