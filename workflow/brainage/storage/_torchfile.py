"""Reading the torch files brainage writes (checkpoints, per-epoch states, pretrained encoders)."""

from __future__ import annotations

import os
import pickle
import zipfile

from brainage.errors import InputDataError
from brainage.storage._atomic import REBUILD_HINT


def read_torch(path: str | os.PathLike) -> object:
    """Load a torch file on the CPU, tensors and plain containers only (``weights_only=True``).

    Parameters
    ----------
    path : path-like
        A ``.pt`` file written by ``torch.save`` (checkpoint.pt, resume-inner<i>.pt, inner-<i>.pt, encoder.pt).

    Returns
    -------
    object
        What was saved, usually a dict of tensors and plain values.

    Raises
    ------
    InputDataError
        The file is missing, empty, truncated or not a torch file; the message starts with its path.
    """
    import torch  # storage is imported at DAG build, where torch is not needed

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputDataError(f"{path}: file not found (rerun snakemake to rebuild it)") from None
    # A zero-byte file ends in EOFError, a truncated archive in RuntimeError ("failed finding central
    # directory"), foreign bytes in UnpicklingError; weights_only refusals are UnpicklingError too.
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputDataError(
            f"{path}: not a readable torch file (truncated or corrupt: {reason}); {REBUILD_HINT}"
        ) from None
