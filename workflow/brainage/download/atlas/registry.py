"""The atlas registry's parameters: spec validation with defaults, and short ids (no nilearn, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from brainage.errors import ConfigError

REQUIRED = object()  # marks a parameter without a default
_ID = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Param:
    """One atlas parameter: its default and the values it accepts.

    Attributes
    ----------
    default : object
        Filled in when the spec leaves the key out; ``REQUIRED`` if it must be given.
    allowed : tuple or None
        The accepted values (compared by type and value: ``True`` is not ``1``); or None.
    check : callable or None
        Predicate for values that are not an enumeration (used when ``allowed`` is None).
    wanted : str
        The accepted values in words, for messages.
    """

    default: object
    allowed: tuple | None = None
    check: Callable[[object], bool] | None = None
    wanted: str = ""

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is valid (``bool`` never passes for a number)."""
        if self.allowed is not None:
            return any(type(value) is type(ok) and value == ok for ok in self.allowed)
        return self.check(value)

    def describe(self) -> str:
        """The accepted values, for messages."""
        return self.wanted or ", ".join(repr(v) for v in self.allowed)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: object) -> bool:
    return (_int(value) or isinstance(value, float)) and value > 0


def _path(value: object) -> bool:
    return isinstance(value, str) and value != ""


#: Harvard-Oxford label images (the maximum-probability ones: a probabilistic HO atlas would be
#: kind "maps" with 48 overlapping volumes, which nilearn cannot split by hemisphere).
HO_ATLASES = tuple(f"{part}-maxprob-thr{thr}-{res}mm" for part in ("cort", "cortl", "sub")
                   for thr in (0, 25, 50) for res in (1, 2))
#: BASC scales shipped in the Cambridge multiscale archive (nilearn 0.13.1's accepted set).
BASC_RESOLUTIONS = (7, 12, 20, 36, 64, 122, 197, 325, 444)
PCP_ATLASES = ("cc200", "cc400", "aal", "ho", "ez", "tt", "dosenbach160")
_RADIUS = Param(5.0, check=_positive, wanted="a number of mm > 0")

#: Parameters of each registered atlas (every spec also takes ``name`` and ``id``).
PARAMS: dict[str, dict[str, Param]] = {
    "kmeans": {"n_regions": Param(100, check=lambda v: _int(v) and v >= 2, wanted="an integer >= 2")},
    "file": {"path": Param(REQUIRED, check=_path, wanted="the path of a NIfTI label image"),
             "labels": Param(None, check=lambda v: v is None or _path(v),
                             wanted="null or the path of a TSV with columns index, name")},
    "schaefer": {"n_rois": Param(400, tuple(range(100, 1001, 100))), "yeo_networks": Param(7, (7, 17)),
                 "resolution_mm": Param(2, (1, 2))},
    "harvard_oxford": {"atlas_name": Param("cort-maxprob-thr25-2mm", HO_ATLASES),
                       "symmetric_split": Param(False, (False, True))},
    "msdl": {},
    "basc": {"resolution": Param(122, BASC_RESOLUTIONS), "version": Param("sym", ("sym", "asym"))},
    "pcp": {"atlas": Param("cc200", PCP_ATLASES)},
    "power": {"radius_mm": _RADIUS},
    "dosenbach": {"radius_mm": _RADIUS},
}
ATLAS_NAMES: tuple[str, ...] = tuple(PARAMS)


def validate_spec(spec: dict) -> dict:
    """Check an atlas spec and fill its defaults (cheap: no nilearn import, no file access).

    Parameters
    ----------
    spec : dict
        One item of the ``atlases`` config list: ``name`` (a key of the registry), that
        atlas's parameters, optionally ``id`` (letters and digits).

    Returns
    -------
    dict
        A new dict: ``name``, every parameter of that atlas (given or default; sphere radii
        as float), and ``id`` (given or :func:`atlas_id`'s).

    Raises
    ------
    ConfigError
        Naming the atlas and the key: an unknown name (lists the registry), an unknown key
        (lists the atlas's parameters), a missing required key, or a bad value (lists the
        valid values).
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"atlases: each entry must be a mapping with a 'name', found {spec!r}")
    name = spec.get("name")
    if name not in PARAMS:
        raise ConfigError(f"atlases: unknown atlas name {name!r}; valid names: {', '.join(ATLAS_NAMES)}")
    params = PARAMS[name]
    unknown = sorted(set(spec) - set(params) - {"name", "id"})
    if unknown:
        raise ConfigError(f"atlas {name!r}: unknown key(s) {', '.join(unknown)}; valid parameters: "
                          f"{_listing(params)}")
    done = {"name": name}
    for key, param in params.items():
        if key not in spec and param.default is REQUIRED:
            raise ConfigError(f"atlas {name!r}: missing key {key!r} ({param.describe()})")
        value = spec.get(key, param.default)
        if not param.accepts(value):
            raise ConfigError(f"atlas {name!r}: {key} must be {param.describe()}; found {value!r}")
        done[key] = float(value) if param is _RADIUS else value
    if "id" in spec:
        done["id"] = spec["id"]
    done["id"] = atlas_id(done)
    return done


def _listing(params: dict[str, Param]) -> str:
    if not params:
        return "none (only name and id)"
    return "; ".join(f"{key} ({param.describe()})" for key, param in params.items()) + "; id"


def atlas_id(spec: dict) -> str:
    """The short id of an atlas in file names (a BIDS entity value: letters and digits).

    Deterministic from the spec: e.g. ``kmeans100``, ``schaefer400n7``, ``msdl``,
    ``basc122sym``, ``hocortmaxprobthr25``, ``cc200``, ``power264``, ``dosenbach160``; a
    non-default resolution or radius is appended (``schaefer400n7r1``, ``power264r8``,
    ``hocortmaxprobthr25r1``, ``power264r7p5``). ``spec["id"]`` overrides it.

    Parameters
    ----------
    spec : dict
        An atlas spec with its parameters (defaults filled, as :func:`validate_spec` does).

    Raises
    ------
    ConfigError
        If ``id`` is not letters and digits, or a ``file`` atlas's stem has none.
    """
    if spec.get("id") is not None:
        given = spec["id"]
        if not isinstance(given, str) or not _ID.match(given):
            raise ConfigError(f"atlas {spec.get('name')!r}: id must be letters and digits only "
                              f"(a BIDS entity value), found {given!r}")
        return given
    name = spec["name"]
    if name == "file":
        return _file_id(spec["path"])
    return _IDS[name](spec)


def _file_id(path: str) -> str:
    stem = PurePath(path).name.split(".")[0]  # CC200.nii.gz -> CC200
    derived = re.sub(r"[^a-z0-9]", "", stem.lower())
    if not derived:
        raise ConfigError(f"atlas 'file': cannot derive an id from the file name {path!r}; set id: (letters, digits)")
    return derived


def _radius_suffix(radius: float) -> str:
    return "" if radius == 5.0 else "r" + f"{radius:g}".replace(".", "p")


def _ho_id(spec: dict) -> str:
    stem, res = spec["atlas_name"].rsplit("-", 1)
    return ("ho" + stem.replace("-", "") + ("" if res == "2mm" else "r1")
            + ("split" if spec["symmetric_split"] else ""))


_IDS: dict[str, Callable[[dict], str]] = {
    "kmeans": lambda s: f"kmeans{s['n_regions']}",
    "schaefer": lambda s: f"schaefer{s['n_rois']}n{s['yeo_networks']}" + ("" if s["resolution_mm"] == 2 else "r1"),
    "harvard_oxford": _ho_id,
    "msdl": lambda s: "msdl",
    "basc": lambda s: f"basc{s['resolution']}{s['version']}",
    # "pcpdosenbach160": the sphere atlas "dosenbach" already has the id dosenbach160.
    "pcp": lambda s: "pcpdosenbach160" if s["atlas"] == "dosenbach160" else s["atlas"],
    "power": lambda s: "power264" + _radius_suffix(s["radius_mm"]),
    "dosenbach": lambda s: "dosenbach160" + _radius_suffix(s["radius_mm"]),
}
