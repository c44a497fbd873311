"""brainage: brain age from resting-state fMRI."""

__version__ = "0.1.0"
