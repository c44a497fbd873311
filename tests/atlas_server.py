"""Atlas downloads in tests: a loopback HTTP server with synthetic upstream layouts and the real PCP files."""

from __future__ import annotations

import gzip
import io
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

# Upstream URL paths (host removed) as nilearn 0.13.1 and brainage download them: each atlas is
# served at the same path, so the mirror base URL is the server's URL + this prefix.
SCHAEFER_PATH = ("/ThomasYeoLab/CBIG/v0.14.3-Update_Yeo2011_Schaefer2018_labelname/stable_projects/"
                 "brain_parcellation/Schaefer2018_LocalGlobal/Parcellations/MNI/")
HO_PATH = "/frs/download.php/9902/"
MSDL_PATH = "/parietal/files/2015/01/"
BASC_PATH = "/files/"
PCP_PATH = ("/preprocessed-connectomes-project/abide/fda1ec5d3f53eb97d94352e779f37c3ce46caee1/"
            "preprocessing/resources/abide_rois/")
PCP_FILES = ("CC200.nii.gz", "CC400.nii.gz", "aal_mask_pad.nii.gz", "ho_mask_pad.nii.gz", "ez_mask_pad.nii.gz",
             "tt_mask_pad.nii.gz", "rois_3mm.nii.gz")
YEO7 = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")
# The synthetic Harvard-Oxford subcortical atlas: value = XML index + 1. "Left Amygdala" has no
# voxel (nilearn's own atlases can have empty regions); "Brain-Stem" crosses the midline.
HO_SUB = ("Left Thalamus", "Right Thalamus", "Brain-Stem", "Left Amygdala")
HO_CORT = ("Frontal Pole", "Insular Cortex", "Occipital Pole")
MSDL_NAMES = ("L Aud", "R Aud", "Striate", "L DMN", "Med DMN", "Front DMN", "R DMN", "Occ post", "Motor",
              "R DLPFC", "R Front pol", "R Par", "R Post Temp", "Basal", "L Par", "L DLPFC", "L Front pol",
              "L IPS", "R IPS", "L LOC", "Vis", "R LOC", "D ACC", "V ACC", "R A Ins", "L STS", "R STS",
              "L TPJ", "Broca", "Sup Front S", "R TPJ", "R Pars Op", "Cereb", "Dors PCC", "L Ins", "Cing",
              "R Ins", "L Ant IPS", "R Ant IPS")


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Mirror:
    """A running server: its URL, the folder it serves, the requests it got, faults to inject.

    ``faults`` maps a URL path to a list of faults consumed one per GET: ``"truncate"`` sends
    the headers of the whole file and half its body, then closes; ``"503"`` answers 503.
    ``requests`` records ``(path, Range header or None)`` per GET.
    """

    url: str
    root: Path
    faults: dict[str, list[str]] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def urls(self) -> dict[str, str]:
        """``atlas_fetch.urls`` pointing every downloaded atlas at this server."""
        return {"schaefer": self.url + SCHAEFER_PATH, "harvard_oxford": self.url + HO_PATH,
                "msdl": self.url + MSDL_PATH, "basc": self.url + BASC_PATH, "pcp": self.url + PCP_PATH}


def _handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):  # noqa: N802 (http.server's name)
            path = unquote(urlsplit(self.path).path)
            mirror.requests.append((path, self.headers.get("Range")))
            file = mirror.root / path.lstrip("/")
            if ".." in Path(path).parts or not file.is_file():
                self.send_error(404)
                return
            fault = mirror.faults.get(path, []).pop(0) if mirror.faults.get(path) else None
            if fault == "503":
                self.send_error(503)
                return
            body = file.read_bytes()
            start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if fault == "truncate":
                self.wfile.write(body[start:start + (len(body) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body[start:])

    return Handler


@contextmanager
def serve(root: Path) -> Iterator[Mirror]:
    """Serve ``root`` over HTTP on 127.0.0.1 (a free port) in a thread; yield the :class:`Mirror`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)
    mirror = Mirror(url=f"http://127.0.0.1:{server.server_address[1]}", root=root)
    server.RequestHandlerClass = _handler(mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ---------------------------------------------------------------- synthetic upstream files


def _mni_mask() -> nib.Nifti1Image:
    from nilearn.datasets import load_mni152_brain_mask

    return load_mni152_brain_mask(resolution=2)


def _slabs(mask: np.ndarray, n: int) -> np.ndarray:
    """``mask`` cut into ``n`` non-empty parcels (runs of voxels in array order), labels 1..n."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    flat = np.flatnonzero(mask)
    for value, chunk in enumerate(np.array_split(flat, n), start=1):
        labels.flat[chunk] = value
    return labels


def _nii_bytes(img: nib.Nifti1Image, gz: bool = True) -> bytes:
    raw = img.to_bytes()  # a single-file .nii
    return gzip.compress(raw, mtime=0) if gz else raw


def schaefer_names(n_rois: int, networks: int = 7) -> list[str]:
    """Region names as in the Schaefer LUT: ``7Networks_LH_Vis_1``... (half per hemisphere)."""
    names = []
    for i in range(n_rois):
        hemi = "LH" if i < n_rois // 2 else "RH"
        net = YEO7[(i % (n_rois // 2)) * len(YEO7) // (n_rois // 2)]
        names.append(f"{networks}Networks_{hemi}_{net}")
    counts: dict[str, int] = {}
    out = []
    for name in names:
        counts[name] = counts.get(name, 0) + 1
        out.append(f"{name}_{counts[name]}")
    return out


def write_schaefer(root: Path, n_rois: int = 100, networks: int = 7, res: int = 2) -> None:
    """``Schaefer2018_<n>Parcels_<k>Networks_order.txt`` (LUT) and the ``_FSLMNI152_<res>mm.nii.gz`` image."""
    folder = root / SCHAEFER_PATH.strip("/")
    folder.mkdir(parents=True, exist_ok=True)
    mask = _mni_mask()
    labels = _slabs(np.asarray(mask.dataobj) > 0, n_rois)
    (folder / f"Schaefer2018_{n_rois}Parcels_{networks}Networks_order_FSLMNI152_{res}mm.nii.gz").write_bytes(
        _nii_bytes(nib.Nifti1Image(labels, mask.affine)))
    lut = "".join(f"{i}\t{name}\t120\t18\t134\t0\n" for i, name in enumerate(schaefer_names(n_rois, networks), 1))
    (folder / f"Schaefer2018_{n_rois}Parcels_{networks}Networks_order.txt").write_text(lut)


def _fsl_grid() -> tuple[tuple[int, int, int], np.ndarray]:
    # FSL's MNI152 2 mm grid is stored left-right flipped (LAS, x step -2 mm); nilearn reorders it.
    affine = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    return (91, 109, 91), affine


def _ho_xml(names: tuple[str, ...]) -> bytes:
    rows = "".join(f'<label index="{i}" x="45" y="60" z="40">{name}</label>\n' for i, name in enumerate(names))
    return f"<?xml version='1.0' encoding='us-ascii'?>\n<atlas><header/><data>\n{rows}</data></atlas>\n".encode()


def write_harvard_oxford(root: Path) -> None:
    """``HarvardOxford.tgz`` with sub/cort/cortl maxprob-thr25 2 mm images and their XML label files."""
    shape, affine = _fsl_grid()
    sub = np.zeros(shape, dtype=np.int16)
    # Array axis 0 runs right to left here (x = 90 - 2 i): i < 45 is the right hemisphere.
    sub[50:60, 40:50, 30:40] = 1  # Left Thalamus
    sub[31:41, 40:50, 30:40] = 2  # Right Thalamus
    sub[40:51, 30:38, 20:30] = 3  # Brain-Stem, across the midline
    cort = np.zeros(shape, dtype=np.int16)
    for value, y in enumerate((90, 60, 20), start=1):
        cort[20:71, y:y + 8, 40:50] = value  # each across both hemispheres
    cortl = np.where(cort > 0, 2 * cort - (np.arange(shape[0]) >= 45)[:, None, None], 0).astype(np.int16)
    images = {"sub": sub, "cort": cort, "cortl": cortl}
    members = {
        **{f"data/atlases/HarvardOxford/HarvardOxford-{part}-maxprob-thr25-2mm.nii.gz":
           _nii_bytes(nib.Nifti1Image(data, affine)) for part, data in images.items()},
        "data/atlases/HarvardOxford-Subcortical.xml": _ho_xml(HO_SUB),
        "data/atlases/HarvardOxford-Cortical.xml": _ho_xml(HO_CORT),
        "data/atlases/HarvardOxford-Cortical-Lateralized.xml": _ho_xml(
            tuple(f"{side} {name}" for name in HO_CORT for side in ("Left", "Right"))),
    }
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / HO_PATH.strip("/")).mkdir(parents=True, exist_ok=True)
    (root / HO_PATH.strip("/") / "HarvardOxford.tgz").write_bytes(stream.getvalue())


def write_msdl(root: Path) -> None:
    """``MSDL_rois.zip``: ``MSDL_rois/msdl_rois.nii`` (40, 48, 35, 39) maps + ``msdl_rois_labels.csv``."""
    shape = (40, 48, 35)
    affine = np.array([[4.0, 0, 0, -78], [0, 4, 0, -111], [0, 0, 4, -51], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    centres = rng.uniform([8, 8, 8], np.array(shape) - 8, size=(len(MSDL_NAMES), 3))
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    maps = np.zeros((*shape, len(MSDL_NAMES)), dtype=np.float32)
    for k, centre in enumerate(centres):
        blob = np.exp(-((grid - centre) ** 2).sum(-1) / 8.0)
        maps[..., k] = np.where(blob > 0.05, blob, 0)
    xyz = nib.affines.apply_affine(affine, centres)
    labels = pd.DataFrame({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "name": MSDL_NAMES,
                           "net name": [name.split()[-1] for name in MSDL_NAMES]})
    folder = root / MSDL_PATH.strip("/")
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "MSDL_rois.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MSDL_rois/msdl_rois.nii", _nii_bytes(nib.Nifti1Image(maps, affine), gz=False))
        archive.writestr("MSDL_rois/msdl_rois_labels.csv", labels.to_csv(index=False))
        archive.writestr("MSDL_rois/README.txt", "synthetic MSDL stand-in")


def write_basc(root: Path, scales: tuple[int, ...] = (7, 122)) -> None:
    """The figshare zips ``files/1861819`` (sym) and ``files/1861820`` (asym) with the given scales."""
    shape = (53, 64, 52)
    affine = np.array([[3.0, 0, 0, -78], [0, 3, 0, -112], [0, 0, 3, -70], [0, 0, 0, 1]])
    brain = np.zeros(shape, dtype=bool)
    brain[8:45, 8:56, 8:44] = True
    folder = root / BASC_PATH.strip("/")
    folder.mkdir(parents=True, exist_ok=True)
    for version, number in (("sym", "1861819"), ("asym", "1861820")):
        with zipfile.ZipFile(folder / number, "w", zipfile.ZIP_DEFLATED) as archive:
            for scale in scales:
                member = (f"template_cambridge_basc_multiscale_nii_{version}/"
                          f"template_cambridge_basc_multiscale_{version}_scale{scale:03}.nii.gz")
                archive.writestr(member, _nii_bytes(nib.Nifti1Image(_slabs(brain, scale).astype(np.int16), affine)))


def link_pcp(root: Path, shared_atlases: Path) -> None:
    """The real PCP label images, linked (not copied) from ``shared/data/abide_pcp_atlases``."""
    folder = root / PCP_PATH.strip("/")
    folder.mkdir(parents=True, exist_ok=True)
    for name in PCP_FILES:
        (folder / name).symlink_to(shared_atlases / name)


@pytest.fixture(scope="module")
def atlas_mirror(tmp_path_factory, shared_data) -> Iterator[Mirror]:
    """A loopback server with every downloaded atlas laid out as upstream serves it.

    Synthetic Schaefer 100x7 (2 mm), Harvard-Oxford (sub/cort/cortl thr25 2 mm), MSDL, BASC
    (scales 7 and 122, sym and asym); the real PCP label images.
    """
    root = tmp_path_factory.mktemp("atlas_mirror")
    write_schaefer(root)
    write_harvard_oxford(root)
    write_msdl(root)
    write_basc(root)
    link_pcp(root, shared_data / "abide_pcp_atlases")
    with serve(root) as mirror:
        yield mirror
