"""Time extraction of one realistic 2 mm subject: decode, the plain nilearn way and ours; storage of the volumes.

Usage: python bench/extract.py [--repeats 3] [--work DIR] [--only decode|plain|ours|storage|demo ...]
[--demo-subjects 10] [--record]  (run inside the installed environment). Prints a markdown table with the machine, date and package
versions; ``--record`` also appends it to bench/results.md.

The subject (seeded, written under ``--work``, default a temporary folder, never the repository):
nilearn's MNI152 2 mm grid, 200 frames, TR 2 s, float32 ``.nii.gz`` written by nibabel (as fMRIPrep
writes it), nilearn's 2 mm brain mask, an fMRIPrep confounds TSV + JSON, and a 400-parcel k-means
label atlas. The BOLD signal inside the mask is the demo cohort's signal model
(:func:`brainage.demo.signals.simulate_run`); a 4-voxel shell around the brain holds scalp-like
intensities with noise, since fMRIPrep does not mask its ``desc-preproc_bold`` (an all-zero
background would compress better, and decode faster, than a real file).

Every timed variant runs in its own child process (so each loads the file itself and its peak RSS
is its own, ``VmHWM``); each figure is the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from demo_run import machine  # noqa: E402  (bench/ is sys.path[0] when run as a script)

REPO = Path(__file__).resolve().parents[1]
SEED = 42
N_TIMEPOINTS, TR, N_REGIONS, VOLUME_MM = 200, 2.0, 400, 4
PARTICIPANT = "sub-001"


def ours(paths: dict, workdir: Path) -> None:
    """Our extraction of one subject: ROI series (one atlas) + coarse volumes + QC.

    The one place that calls the extraction API (adapt it here when the API changes).
    ``paths`` holds ``participant_id``, ``bold``, ``mask``, ``confounds``, ``atlas_dir`` and ``volume_voxel_size`` (mm).
    """
    from brainage.extract.subject import extract_subject

    params = dict(_extract_params(), volume_voxel_size=paths["volume_voxel_size"])
    extract_subject(
        paths["participant_id"], paths["bold"], paths["mask"], [paths["atlas_dir"]], params,
        [workdir / "series.parquet"], workdir / "volumes.parquet", workdir / "qc.json",
        confounds=paths["confounds"],
    )


def _extract_params() -> dict:
    """The default ``extract`` config section."""
    return _config()["extract"]


def _config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


# --------------------------------------------------------------------------- the subject


def subject_paths(work: Path) -> dict:
    """Where :func:`generate_subject` writes (fMRIPrep names)."""
    from brainage.demo.generate import func_paths

    paths = func_paths(work / "subject", PARTICIPANT, 2)
    paths["atlas_dir"] = work / "atlas"
    paths["atlas"] = work / "atlas" / "atlas.nii.gz"  # the registry's image name for label atlases
    paths.update(participant_id=PARTICIPANT, volume_voxel_size=VOLUME_MM, tr=TR)
    return paths


def generate_subject(work: Path) -> dict:
    """Write the realistic subject and atlas under ``work`` once (kept for later runs); return the paths."""
    paths = subject_paths(work)
    _build_atlas(paths["atlas_dir"], {"name": "kmeans", "n_regions": N_REGIONS})
    done = work / "subject" / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("seed") == SEED:
        return paths
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask

    from brainage.demo.confounds import confounds_table
    from brainage.demo.generate import TASK, XFORM_MNI
    from brainage.demo.signals import age_coupling, make_sites, simulate_run
    from brainage.storage import write_json, write_tsv

    start = time.perf_counter()
    mask_img = load_mni152_brain_mask(resolution=2)
    grid = _grid_2mm(mask_img)
    rng = np.random.default_rng([SEED, 2, 0])
    site = make_sites(["siteA"], grid, SEED)[0]
    run = simulate_run(rng, grid, site, age_coupling(40.0, 8.0, 80.0), N_TIMEPOINTS, TR)
    bold = grid.to_volume(run.bold, dtype=np.float32)  # (x, y, z, t), Fortran order
    _add_scalp(bold, grid.mask, rng)
    for key, data in (("bold", bold), ("mask", grid.mask.astype(np.uint8))):
        img = nib.Nifti1Image(data, grid.affine)
        img.header.set_zooms((2.0,) * 3 + ((TR,) if data.ndim == 4 else ()))
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(grid.affine, code=XFORM_MNI)
        img.set_sform(grid.affine, code=XFORM_MNI)
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, paths[key])
    del bold
    write_json(paths["bold"].with_name(paths["bold"].name.replace(".nii.gz", ".json")),
               {"RepetitionTime": TR, "TaskName": TASK, "SkullStripped": False, "StartTime": TR / 2})
    table, meta = confounds_table(grid, run.bold, run.motion, TR, run.n_dummy)
    write_tsv(paths["confounds"], table)
    write_json(paths["confounds"].with_suffix(".json"), meta)
    done.write_text(json.dumps({"seed": SEED, "seconds": time.perf_counter() - start}))
    return paths


def _grid_2mm(mask_img):
    """The demo grid (tissue fractions, nodes, blobs) on nilearn's 2 mm MNI152 grid itself.

    ``brainage.demo.grid.make_grid(2)`` averages the 1 mm templates, which gives a slightly
    different grid (98 x 116 x 94) from the 2 mm template (99 x 117 x 95) a 2 mm fMRIPrep run is on.
    """
    import nibabel as nib
    from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template
    from scipy import ndimage

    from brainage.demo import grid as demo_grid

    mask = np.asarray(mask_img.dataobj) > 0
    coords = nib.affines.apply_affine(mask_img.affine, np.argwhere(mask))
    gm = np.clip(np.asarray(load_mni152_gm_template(resolution=2).dataobj, dtype=np.float32)[mask], 0, 1)
    wm = np.clip(np.asarray(load_mni152_wm_template(resolution=2).dataobj, dtype=np.float32)[mask], 0, 1 - gm)
    depth = ndimage.distance_transform_edt(mask)[mask] * 2.0
    return demo_grid.DemoGrid(
        affine=mask_img.affine, mask=mask, coords=coords, gm=gm, wm=wm, csf=np.clip(1 - gm - wm, 0, 1),
        node=demo_grid._node_index(coords), edge=np.exp(-(depth - 2.0) / 8.0).clip(0, 1).astype(np.float32),
        blobs=demo_grid._blobs(coords),
    )


def _add_scalp(bold: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Scalp-like intensities (mean ~300, 3 % noise per frame) in a 4-voxel shell around the brain."""
    from scipy import ndimage

    shell = ndimage.binary_dilation(mask, iterations=4) & ~mask
    base = rng.uniform(150.0, 450.0, int(shell.sum())).astype(np.float32)
    for t in range(bold.shape[3]):
        frame = bold[..., t]
        frame[shell] = base * (1.0 + 0.03 * rng.standard_normal(base.size, dtype=np.float32))


def _build_atlas(folder: Path, spec: dict, seed: int = SEED) -> None:
    """Build an atlas with the registry into the folder form extraction reads (once)."""
    from brainage.download.atlas import build_atlas

    if not (folder / "atlas.json").is_file():
        build_atlas(spec, seed, folder, data_dir=folder.parent / "nilearn_data")


# --------------------------------------------------------------------------- the timed variants


def decode_nibabel(paths: dict, workdir: Path) -> None:
    """nibabel's default read of the whole 4D array (scaled, in the stored dtype)."""
    import nibabel as nib

    np.asanyarray(nib.load(paths["bold"]).dataobj)


def decode_zlib_ng(paths: dict, workdir: Path) -> None:
    """The fastest decoder measured (zlib-ng), into one reused 32 MiB buffer: decoding alone."""
    from zlib_ng import gzip_ng

    view = memoryview(bytearray(32 * 2**20))
    with gzip_ng.open(paths["bold"], "rb") as stream:
        while stream.readinto(view):
            pass


def plain(paths: dict, workdir: Path) -> None:
    """The plain nilearn way: NiftiLabelsMasker with the same cleaning, then resample_img to the coarse grid.

    Each step loads the file itself; nothing is written (which favours this variant: ours writes
    its Parquet files and QC record).
    """
    import nibabel as nib
    from nilearn.image import resample_img
    from nilearn.interfaces.fmriprep import load_confounds
    from nilearn.maskers import NiftiLabelsMasker

    from brainage.extract.params import ExtractParams

    cfg = ExtractParams.from_dict(dict(_extract_params(), volume_voxel_size=paths["volume_voxel_size"]))
    confounds, sample_mask = load_confounds(str(paths["bold"]), demean=True, **cfg.confounds)
    masker = NiftiLabelsMasker(
        str(paths["atlas"]), mask_img=str(paths["mask"]), detrend=cfg.detrend, high_pass=cfg.high_pass,
        low_pass=cfg.low_pass, t_r=paths["tr"], standardize=cfg.nilearn_standardize, standardize_confounds=True,
    )
    masker.fit_transform(str(paths["bold"]), confounds=confounds, sample_mask=sample_mask)
    header = nib.load(paths["bold"])
    affine, shape = coarse_grid(header.affine, header.shape[:3], cfg.volume_voxel_size)
    resample_img(str(paths["bold"]), target_affine=affine, target_shape=shape,
                 interpolation="continuous", force_resample=True, copy_header=True)


def coarse_grid(affine: np.ndarray, shape: tuple[int, ...], voxel_mm: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """The block grid of ``voxel_mm`` voxels over an isotropic grid: affine (centred on the blocks) and shape."""
    factor = int(round(voxel_mm / abs(affine[0, 0])))
    out = np.array(affine, dtype=float)
    out[:3, 3] = affine[:3, :3] @ np.full(3, (factor - 1) / 2) + affine[:3, 3]
    out[:3, :3] = affine[:3, :3] * factor
    return out, tuple(-(-int(n) // factor) for n in shape)


def ours_demo(paths: dict, workdir: Path) -> list[float]:
    """:func:`ours` on each demo subject in turn; seconds per subject."""
    return _per_subject(ours, paths, workdir)


def plain_demo(paths: dict, workdir: Path) -> list[float]:
    """:func:`plain` on each demo subject in turn; seconds per subject."""
    return _per_subject(plain, paths, workdir)


def _per_subject(variant, paths: dict, workdir: Path) -> list[float]:
    seconds = []
    for subject in paths["subjects"]:
        out = workdir / subject["participant_id"]
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        variant(subject, out)
        seconds.append(time.perf_counter() - start)
    return seconds


VARIANTS = {
    "decode_nibabel": decode_nibabel, "decode_zlib_ng": decode_zlib_ng, "plain": plain, "ours": ours,
    "plain_demo": plain_demo, "ours_demo": ours_demo,
}


def _child(name: str, paths_json: Path, workdir: Path) -> None:
    """Run one variant once (in a fresh process); print its seconds as JSON on the last line."""
    import nibabel  # noqa: F401 - imports outside the timed part, as a long-running job has them
    import nilearn.maskers  # noqa: F401

    import brainage.extract.subject  # noqa: F401

    paths = json.loads(paths_json.read_text())
    paths = {k: Path(v) if isinstance(v, str) else v for k, v in paths.items()}
    paths["subjects"] = [{k: Path(v) if isinstance(v, str) else v for k, v in s.items()}
                         for s in paths.get("subjects", [])]
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = VARIANTS[name](paths, workdir)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "per_subject": result, "peak_mib": _peak_rss_mib()}))


def _peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``; MiB).

    Not ``getrusage``: on Linux a process's ``ru_maxrss`` keeps its parent's peak from before the
    ``exec`` (the forked copy of the parent counts), so children of a parent that has grown
    would all report at least the parent's size. ``VmHWM`` belongs to the new address space.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is


def run_variant(name: str, paths: dict, work: Path, repeats: int) -> dict:
    """Best wall time of ``repeats`` child processes, and the largest peak RSS among them (MiB)."""
    paths_json = work / "paths.json"
    paths_json.write_text(json.dumps(paths, default=str))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "workflow"), os.environ.get("PYTHONPATH", "")]))
    runs = []
    for _ in range(repeats):
        proc = subprocess.Popen([sys.executable, __file__, "--child", name, "--paths", str(paths_json),
                                 "--work", str(work / f"out-{name}")], stdout=subprocess.PIPE, env=env, text=True)
        stdout, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"variant {name} failed (exit {proc.returncode})")
        runs.append(json.loads(stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "all_seconds": [r["seconds"] for r in runs], "peak_mib": max(r["peak_mib"] for r in runs)}


# --------------------------------------------------------------------------- storage


def storage(paths: dict, work: Path, repeats: int) -> dict:
    """4 mm volumes of the subject: our Parquet (float16 masked, zstd) versus a float32 4D .nii.gz.

    The frames are block averages of the BOLD over the brain mask (coarse voxels at least half
    inside it), each voxel demeaned and all divided by one pooled SD (``volume_scaling: global``);
    the .nii.gz holds them on the full coarse grid (zeros outside the mask), as ``resample_img``
    output saved by nibabel would.
    """
    import nibabel as nib
    from scipy import sparse

    from brainage import storage as store
    from brainage.extract import nifti

    img = nifti.read_header(paths["bold"])
    brain = np.asarray(nib.load(paths["mask"]).dataobj) > 0
    affine, shape = coarse_grid(img.affine, brain.shape, VOLUME_MM)
    factor = brain.shape[0] // shape[0] + (brain.shape[0] % shape[0] > 0)
    ijk = np.nonzero(brain)
    block = np.ravel_multi_index(tuple(i // factor for i in ijk), shape)
    counts = np.bincount(block, minlength=int(np.prod(shape)))
    coarse_mask = (counts >= 0.5 * factor**3).reshape(shape)
    column = (np.cumsum(coarse_mask.ravel()) - 1)[block]
    keep = coarse_mask.ravel()[block]
    weights = sparse.csc_array((1.0 / counts[block[keep]], (np.ravel_multi_index(ijk, brain.shape, order="F")[keep],
                                                            column[keep])), shape=(brain.size, int(coarse_mask.sum())))
    frames = nifti.reduce_bold(paths["bold"], weights)
    frames -= frames.mean(axis=0)
    frames = (frames / frames.std(ddof=1)).astype(np.float32)
    parquet, nii = work / "volumes.parquet", work / "volumes.nii.gz"
    store.write_volumes(parquet, frames, coarse_mask, affine, participant_id=PARTICIPANT)
    grid = np.zeros(shape + (len(frames),), dtype=np.float32)
    grid[coarse_mask] = frames.T
    out = nib.Nifti1Image(grid, affine)
    out.header.set_zooms((float(VOLUME_MM),) * 3 + (TR,))
    nib.save(out, nii)
    read_ours = _best(lambda: store.read_volumes(parquet), repeats)
    read_nii = _best(lambda: nib.load(nii).get_fdata(), repeats)
    return {"parquet_mb": parquet.stat().st_size / 1e6, "nii_mb": nii.stat().st_size / 1e6,
            "read_parquet_s": read_ours, "read_nii_s": read_nii, "shape": list(shape),
            "n_voxels": int(coarse_mask.sum()), "n_frames": len(frames)}


def _best(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


# --------------------------------------------------------------------------- demo cohort


def demo_paths(work: Path, n_subjects: int) -> dict:
    """Generate the demo cohort (default config) and its atlas once; the first ``n_subjects`` subjects' paths."""
    from brainage.demo.generate import DemoParams, draw_participants, func_paths, generate_demo

    config = _config()
    folder = work / "demo"
    if not (folder / "participants.tsv").is_file():
        generate_demo(folder, config["demo"], config["seed"], n_threads=2)
    atlas_dir = work / "demo_atlas"
    _build_atlas(atlas_dir, config["atlases"][0], config["seed"])
    voxel = config["demo"]["voxel_size"]
    ids = draw_participants(DemoParams.from_dict(config["demo"]), config["seed"])["participant_id"]
    subjects = []
    for participant_id in list(ids)[:n_subjects]:
        subject = func_paths(folder, participant_id, voxel)
        subject.update(participant_id=participant_id, atlas_dir=atlas_dir, atlas=atlas_dir / "atlas.nii.gz",
                       tr=config["demo"]["tr"],
                       volume_voxel_size=config["extract"]["volume_voxel_size"])
        subjects.append(subject)
    return {"subjects": subjects, "n_timepoints": config["demo"]["n_timepoints"], "voxel_size": voxel,
            "volume_voxel_size": config["extract"]["volume_voxel_size"], "n_regions": config["atlases"][0]["n_regions"]}


# --------------------------------------------------------------------------- report


def versions() -> str:
    names = ["numpy", "scipy", "nibabel", "nilearn", "pyarrow", "zlib-ng"]
    return ", ".join(f"{n} {metadata.version(n)}" for n in names)


def report(results: dict, paths: dict, repeats: int) -> str:
    """The markdown entry: setting, table, ratios against the goals."""
    lines = [f"## Extraction of one 2 mm subject, {datetime.date.today().isoformat()}", "",
             f"Machine: {machine()}; load average at start {results['load']}. {versions()}.",
             f"Subject: {results['subject']}. Best of {repeats} runs, each in its own process "
             "(peak RSS: the child's `VmHWM`).", ""]
    timed = {k: v for k, v in results.items() if k in VARIANTS}
    if any(not name.endswith("_demo") for name in timed):
        lines += ["| variant | best (s) | all runs (s) | peak RSS (MiB) |", "|---|---|---|---|"]
        for name, r in timed.items():
            if name.endswith("_demo"):
                continue
            runs = ", ".join(f"{s:.2f}" for s in r["all_seconds"])
            lines.append(f"| {name} | {r['seconds']:.2f} | {runs} | {r['peak_mib']:.0f} |")
        lines.append("")
    if "plain" in timed and "ours" in timed:
        ratio = timed["plain"]["seconds"] / timed["ours"]["seconds"]
        lines.append(f"- plain / ours: **{ratio:.1f}x** (goal >= 4)")
    if "ours" in timed and "decode_nibabel" in timed:
        ratio = timed["ours"]["seconds"] / timed["decode_nibabel"]["seconds"]
        lines.append(f"- ours / nibabel decode: **{ratio:.2f}x** (goal <= 1.3)")
    if "ours" in timed and "decode_zlib_ng" in timed:
        ratio = timed["ours"]["seconds"] / timed["decode_zlib_ng"]["seconds"]
        lines.append(f"- ours / zlib-ng decode alone: {ratio:.2f}x")
    for name in ("ours_demo", "plain_demo"):
        if name in timed:
            per = np.array(timed[name]["per_subject"])
            demo = results["demo"]
            lines.append(f"- demo cohort ({len(per)} subjects, {demo['n_timepoints']} frames at "
                         f"{demo['voxel_size']} mm, "
                         f"{demo['n_regions']} regions, {demo['volume_voxel_size']} mm volumes), {name}: median "
                         f"**{np.median(per):.2f} s** per subject (min {per.min():.2f}, max {per.max():.2f}; "
                         f"first subject included), peak RSS {timed[name]['peak_mib']:.0f} MiB")
    if "storage" in results:
        s = results["storage"]
        lines.append(f"- 4 mm volumes ({s['n_frames']} frames, grid {s['shape']}, {s['n_voxels']} in-mask voxels): "
                     f"Parquet {s['parquet_mb']:.1f} MB vs float32 .nii.gz {s['nii_mb']:.1f} MB = "
                     f"**{s['parquet_mb'] / s['nii_mb']:.2f}** of the size (goal <= 0.25); read "
                     f"`storage.read_volumes` {s['read_parquet_s']:.3f} s vs `nib.load().get_fdata()` "
                     f"{s['read_nii_s']:.3f} s = **{s['read_nii_s'] / s['read_parquet_s']:.1f}x** faster (goal >= 5)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="folder for the generated data (kept); default: a temp folder")
    parser.add_argument("--only", choices=["decode", "plain", "ours", "storage", "demo"], action="append",
                        help="run only these parts (repeatable); default: all")
    parser.add_argument("--demo-subjects", type=int, default=10, help="demo subjects timed (default 10)")
    parser.add_argument("--record", action="store_true", help="append the entry to bench/results.md")
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--paths", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.paths, args.work)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        entry = run(work, args.only or ["decode", "plain", "ours", "storage", "demo"], args)
    print(entry)
    if args.record:
        with open(REPO / "bench" / "results.md", "a") as out:
            out.write("\n" + entry)


def run(work: Path, parts: list[str], args) -> str:
    """Generate what ``parts`` need, time them, and return the markdown entry."""
    results: dict = {"load": ", ".join(f"{x:.1f}" for x in os.getloadavg())}
    paths = generate_subject(work)
    size_gb = paths["bold"].stat().st_size / 1e9
    results["subject"] = (f"MNI152 2 mm grid, {N_TIMEPOINTS} frames, TR {TR:g} s, float32 .nii.gz of {size_gb:.2f} GB; "
                          f"{N_REGIONS}-parcel k-means atlas; {VOLUME_MM} mm volumes; default `extract` config")
    names = ["decode_nibabel", "decode_zlib_ng"] if "decode" in parts else []
    names += [p for p in ("plain", "ours") if p in parts]
    for name in names:
        results[name] = run_variant(name, paths, work, args.repeats)
        print(f"{name}: {results[name]['seconds']:.2f} s", file=sys.stderr)
    if "storage" in parts:
        results["storage"] = storage(paths, work, args.repeats)
    if "demo" in parts:
        demo = demo_paths(work, args.demo_subjects)
        results["demo"] = demo
        for name in ("ours_demo", "plain_demo"):
            results[name] = run_variant(name, demo, work, 1)
    return report(results, paths, args.repeats)


if __name__ == "__main__":
    main()
