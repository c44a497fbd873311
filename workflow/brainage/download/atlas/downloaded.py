"""Downloaded atlases: Schaefer, Harvard-Oxford, MSDL, BASC (through nilearn) and the ABIDE PCP label images."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainage.download.atlas.http import fetch_into, file_url, with_retries
from brainage.download.atlas.offline import read_label_image
from brainage.download.atlas.standard import BuiltAtlas, label_image, label_names, unique_names
from brainage.errors import InputDataError

logger = logging.getLogger(__name__)

# The public URLs nilearn 0.13.1 downloads from (nilearn/datasets/atlas.py); a mirror in
# atlas_fetch.urls replaces the part before the file name.
SCHAEFER_BASE = ("https://raw.githubusercontent.com/ThomasYeoLab/CBIG/v0.14.3-Update_Yeo2011_Schaefer2018_labelname/"
                 "stable_projects/brain_parcellation/Schaefer2018_LocalGlobal/Parcellations/MNI/")
HO_BASE = "https://www.nitrc.org/frs/download.php/9902/"
MSDL_BASE = "https://team.inria.fr/parietal/files/2015/01/"
BASC_BASE = "https://ndownloader.figshare.com/files/"
BASC_FILES = {"sym": "1861819", "asym": "1861820"}  # figshare file numbers of the two zip archives
PCP_BASE = ("https://raw.githubusercontent.com/preprocessed-connectomes-project/abide/"
            "fda1ec5d3f53eb97d94352e779f37c3ce46caee1/preprocessing/resources/abide_rois/")

_CRADDOCK = ("Craddock RC et al. 2012, A whole brain fMRI atlas generated via spatially constrained spectral "
             "clustering, Hum Brain Mapp 33:1914-1928")
_HO = ("Harvard-Oxford atlas (FSL): Makris N et al. 2006, Schizophr Res 83:155-171; Frazier JA et al. 2005, "
       "Am J Psychiatry 162:1256-1265; Desikan RS et al. 2006, NeuroImage 31:968-980; Goldstein JM et al. 2007, "
       "Biol Psychiatry 61:935-945")
#: The PCP label images: file at PCP_BASE, md5 of that commit's blob, paper (ABIDE PCP: Craddock C
#: et al. 2013, Front Neuroinform, "The Neuro Bureau Preprocessing Initiative").
PCP_FILES = {
    "cc200": ("CC200.nii.gz", "43dccf06129ef3b8c590d8b528da767c", _CRADDOCK),
    "cc400": ("CC400.nii.gz", "ce89095c6401efffed7aef064246cf23", _CRADDOCK),
    "aal": ("aal_mask_pad.nii.gz", "2406ad39eb8397035792bb33aa75e828",
            "Tzourio-Mazoyer N et al. 2002, Automated anatomical labeling of activations in SPM, "
            "NeuroImage 15:273-289"),
    "ho": ("ho_mask_pad.nii.gz", "78fd5340afc10f45ac783948506317f0", _HO),
    "ez": ("ez_mask_pad.nii.gz", "6645cceb258915b16fcdb00948b3da21",
           "Eickhoff SB et al. 2005, A new SPM toolbox for combining probabilistic cytoarchitectonic maps and "
           "functional imaging data, NeuroImage 25:1325-1335"),
    "tt": ("tt_mask_pad.nii.gz", "776637add922ac79b1f256d3f5495cf5",
           "Lancaster JL et al. 2000, Automated Talairach atlas labels for functional brain mapping, "
           "Hum Brain Mapp 10:120-131"),
    "dosenbach160": ("rois_3mm.nii.gz", "80a1ecd8a3d71cbd29f9c6bd24105e28",
                     "Dosenbach NUF et al. 2010, Prediction of individual brain maturity using fMRI, "
                     "Science 329:1358-1361"),
}


def _dataset_dir(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / name  # what nilearn's get_dataset_dir(name, data_dir=data_dir) returns


def _labels_from(img: nib.Nifti1Image, names: dict[int, str], what: str) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """A label image and its table from the names nilearn gives (label value -> name; 0 = background).

    Regions with no voxel (some Harvard-Oxford thresholds leave some empty) are left out.
    """
    data = np.rint(np.asanyarray(img.dataobj)).astype(np.int64)
    present = np.unique(data[data > 0])
    unnamed = sorted(set(present.tolist()) - set(names))
    if unnamed:
        raise InputDataError(f"{what}: label values {unnamed[:10]} in the image have no name in the atlas's table")
    empty = sorted(set(names) - set(present.tolist()) - {0})
    if empty:
        logger.info("%s: regions %s have no voxel; left out", what, [names[v] for v in empty][:10])
    chosen = [names[v] for v in present]
    table = pd.DataFrame({"index": present, "name": unique_names(chosen, present.tolist(), what)})
    return label_image(data, img), table


def build_schaefer(spec: dict, *, seed: int, data_dir: Path, urls: dict) -> BuiltAtlas:
    """Schaefer 2018 cortical parcels (nilearn ``fetch_atlas_schaefer_2018``, which takes a mirror base URL).

    Names are the atlas's own (``7Networks_LH_Vis_1``); ``network`` is their network part (``Vis``).
    """
    from nilearn.datasets import fetch_atlas_schaefer_2018

    n, nets, res = spec["n_rois"], spec["yeo_networks"], spec["resolution_mm"]
    image_name = f"Schaefer2018_{n}Parcels_{nets}Networks_order_FSLMNI152_{res}mm.nii.gz"
    base = file_url(urls, "schaefer", SCHAEFER_BASE, "")
    fetched = with_retries(
        lambda: fetch_atlas_schaefer_2018(n_rois=n, yeo_networks=nets, resolution_mm=res, data_dir=data_dir,
                                          base_url=base, verbose=0),
        atlas="schaefer", url=base + image_name, dataset_dir=_dataset_dir(data_dir, "schaefer_2018"))
    names = dict(zip(fetched.lut["index"].astype(int), fetched.lut["name"]))
    img, table = _labels_from(nib.load(fetched.maps), names, f"atlas {spec['id']}")
    # "7Networks_LH_Vis_1" -> "Vis" (17 networks: "17Networks_LH_VisCent_ExStr_1" -> "VisCent").
    table["network"] = [name.split("_")[2] if name.count("_") >= 3 else "" for name in table["name"]]
    return BuiltAtlas(kind="labels", labels=table, image=img, space=fetched.template, source=base + image_name,
                      citation="Schaefer A et al. 2018, Local-Global parcellation of the human cerebral cortex "
                               "from intrinsic functional connectivity MRI, Cereb Cortex 28:3095-3114")


def build_harvard_oxford(spec: dict, *, seed: int, data_dir: Path, urls: dict) -> BuiltAtlas:
    """Harvard-Oxford maximum-probability labels (nilearn ``fetch_atlas_harvard_oxford``).

    nilearn takes no URL for it: the archive is fetched first (from the mirror if set) into
    the FSL-like folder nilearn looks in, so the nilearn fetcher then finds the files and only
    reads them (label names, reorientation, the optional hemisphere split).
    """
    from nilearn.datasets import fetch_atlas_harvard_oxford

    name = spec["atlas_name"]
    if spec["symmetric_split"]:
        name = name.replace("cort-max", "cortl-max")  # nilearn reads the lateralised file then
    xml = {"sub": "Subcortical", "cortl": "Cortical-Lateralized", "cort": "Cortical"}[name.split("-")[0]]
    url = file_url(urls, "harvard_oxford", HO_BASE, "HarvardOxford.tgz")
    fsl = _dataset_dir(data_dir, "fsl")
    fetch_into(fsl, [f"data/atlases/HarvardOxford/HarvardOxford-{name}.nii.gz",
                     f"data/atlases/HarvardOxford-{xml}.xml"], url, atlas="harvard_oxford", archive=True)
    fetched = with_retries(lambda: fetch_atlas_harvard_oxford(spec["atlas_name"], data_dir=data_dir,
                                                              symmetric_split=spec["symmetric_split"], verbose=0),
                           atlas="harvard_oxford", url=url, dataset_dir=fsl)
    img, table = _labels_from(fetched.maps, dict(enumerate(fetched.labels)), f"atlas {spec['id']}")
    return BuiltAtlas(kind="labels", labels=table, image=img, space=fetched.template, source=url, citation=_HO)


def build_msdl(spec: dict, *, seed: int, data_dir: Path, urls: dict) -> BuiltAtlas:
    """MSDL: 39 probabilistic maps (nilearn ``fetch_atlas_msdl``), kind maps, with names and networks.

    nilearn 0.13.1 ignores its ``url`` argument for MSDL, so the archive is fetched first, as for
    Harvard-Oxford.
    """
    from nilearn.datasets import fetch_atlas_msdl

    url = file_url(urls, "msdl", MSDL_BASE, "MSDL_rois.zip")
    folder = _dataset_dir(data_dir, "msdl_atlas")
    fetch_into(folder, ["MSDL_rois/msdl_rois_labels.csv", "MSDL_rois/msdl_rois.nii"], url, atlas="msdl", archive=True)
    fetched = with_retries(lambda: fetch_atlas_msdl(data_dir=data_dir, verbose=0), atlas="msdl", url=url,
                           dataset_dir=folder)
    maps = nib.load(fetched.maps)
    data = np.asanyarray(maps.dataobj).astype(np.float32)
    index = list(range(1, data.shape[3] + 1)) if data.ndim == 4 else []
    table = pd.DataFrame({"index": index, "name": unique_names(list(fetched.labels), index, f"atlas {spec['id']}"),
                          "network": list(fetched.networks)})
    img = nib.Nifti1Image(data, maps.affine, maps.header)
    img.set_data_dtype(np.float32)
    return BuiltAtlas(kind="maps", labels=table, image=img,
                      space="MNI152" if fetched.template == "MNI?" else fetched.template, source=url,
                      citation="Varoquaux G et al. 2011, Multi-subject dictionary learning to segment an atlas of "
                               "brain spontaneous activity, IPMI 2011, LNCS 6801:562-573")


def build_basc(spec: dict, *, seed: int, data_dir: Path, urls: dict) -> BuiltAtlas:
    """BASC multiscale 2015 parcels (nilearn ``fetch_atlas_basc_multiscale_2015``); names ``roi_001``...

    As for MSDL, nilearn ignores its ``url`` argument: the archive is fetched first.
    """
    from nilearn.datasets import fetch_atlas_basc_multiscale_2015

    version, res = spec["version"], spec["resolution"]
    url = file_url(urls, "basc", BASC_BASE, BASC_FILES[version])
    member = (f"template_cambridge_basc_multiscale_nii_{version}/"
              f"template_cambridge_basc_multiscale_{version}_scale{res:03}.nii.gz")
    folder = _dataset_dir(data_dir, "basc_multiscale_2015")
    fetch_into(folder, [member], url, atlas="basc", archive=True)
    fetched = with_retries(lambda: fetch_atlas_basc_multiscale_2015(data_dir=data_dir, resolution=res,
                                                                    version=version, verbose=0),
                           atlas="basc", url=url, dataset_dir=folder)
    img, data = read_label_image(Path(fetched.maps), "basc")
    present = np.unique(data[data > 0])
    return BuiltAtlas(kind="labels", labels=pd.DataFrame({"index": present, "name": label_names(present)}),
                      image=label_image(data, img), space=fetched.template, source=url,
                      citation="Bellec P et al. 2010, Multi-level bootstrap analysis of stable clusters in "
                               "resting-state fMRI, NeuroImage 51:1126-1139")


def build_pcp(spec: dict, *, seed: int, data_dir: Path, urls: dict) -> BuiltAtlas:
    """One ABIDE PCP label image (3 mm, MNI152 FSL) over HTTPS, md5-verified; names ``roi_<value>``.

    ``roi_`` + the label value zero-padded to 3 digits: the column names of the PCP ROI series
    (CC200 gives roi_001..roi_200; AAL keeps its codes, roi_2001...).
    """
    filename, md5, citation = PCP_FILES[spec["atlas"]]
    url = file_url(urls, "pcp", PCP_BASE, filename)
    (path,) = fetch_into(_dataset_dir(data_dir, "abide_pcp_atlases"), [filename], url, atlas="pcp",
                         archive=False, md5=md5)
    img, data = read_label_image(path, "pcp")
    present = np.unique(data[data > 0])
    return BuiltAtlas(kind="labels", labels=pd.DataFrame({"index": present, "name": label_names(present)}),
                      image=label_image(data, img), space="MNI152 (FSL)", source=url, citation=citation)
