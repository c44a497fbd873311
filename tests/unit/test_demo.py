"""The synthetic demo cohort (brainage.demo): fMRIPrep layout, confounds, determinism, planted effects."""

import json
import re
import subprocess
import sys
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from brainage._version import source_version
from brainage.demo import subject_ids
from brainage.demo.__main__ import main
from brainage.demo.confounds import compcor, cosine_basis, dvars, framewise_displacement, rms_displacement
from brainage.demo.generate import func_paths, generate_demo
from brainage.demo.grid import LOCAL_EFFECT_NETWORKS, NODES, make_grid
from brainage.demo.signals import age_coupling, band_limited, make_sites, neural_signal, node_signals
from brainage.errors import ConfigError

PARAMS = {
    "n_subjects": 8,
    "sites": ["siteA", "siteB"],
    "n_timepoints": 60,
    "tr": 2.5,
    "voxel_size": 8,
    "age_min": 8.0,
    "age_max": 80.0,
}
SMALL = {**PARAMS, "n_subjects": 4, "n_timepoints": 20}
SEED = 3
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
NETWORK = np.array([network for _, network, _ in NODES])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    generate_demo(out, PARAMS, SEED)
    return out


@pytest.fixture(scope="module")
def grid():
    return make_grid(PARAMS["voxel_size"])


@pytest.fixture(scope="module")
def participants(demo):
    return pd.read_csv(demo / "participants.tsv", sep="\t")


def _bold(demo, participant_id, grid):
    """In-mask BOLD (n_timepoints, n_voxels) float32."""
    img = nib.load(func_paths(demo, participant_id, PARAMS["voxel_size"])["bold"])
    return np.asarray(img.dataobj, dtype=np.float32)[grid.mask].T


def _denoised(demo, participant_id, signals):
    """Clean ``signals`` (n_timepoints, n) of one subject as the pipeline's default extract does.

    Cleaning is linear per column (standardising aside), so cleaning node means or node
    voxels only gives what cleaning every voxel would, in a fraction of the time.
    """
    from nilearn.interfaces.fmriprep import load_confounds
    from nilearn.signal import clean

    bold = func_paths(demo, participant_id, PARAMS["voxel_size"])["bold"]
    confounds, sample_mask = load_confounds(
        str(bold), strategy=["motion", "wm_csf", "high_pass", "scrub"], motion="full", wm_csf="basic",
        fd_threshold=0.5, std_dvars_threshold=3.0, scrub=5,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # nilearn 0.14 default change, set explicitly
        return clean(
            signals, confounds=confounds, sample_mask=sample_mask, detrend=True, low_pass=0.1, high_pass=0.01,
            t_r=PARAMS["tr"], standardize=None, standardize_confounds=True,
        )


# --- subject labels and a light import -------------------------------------------------------


def test_subject_ids_are_zero_padded_bids_labels():
    assert subject_ids(3) == ["001", "002", "003"]
    assert subject_ids(1000)[-2:] == ["999", "1000"]


@pytest.mark.parametrize("bad", [0, -2, 2.0, True])
def test_subject_ids_reject_non_positive_integers(bad):
    with pytest.raises(ValueError, match="demo.n_subjects must be a positive integer"):
        subject_ids(bad)


def test_importing_the_package_does_not_import_numpy():
    # Snakemake imports brainage.demo at DAG build only for subject_ids.
    code = "import sys, brainage.demo; print(sorted(m for m in ('numpy', 'nibabel', 'nilearn') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- layout and metadata ---------------------------------------------------------------------


def test_files_have_the_exact_fmriprep_layout(demo):
    found = sorted(str(p.relative_to(demo)) for p in demo.rglob("*") if p.is_file())
    expected = ["derivatives/dataset_description.json", "participants.json", "participants.tsv"]
    for label in subject_ids(PARAMS["n_subjects"]):
        func = f"derivatives/sub-{label}/func/sub-{label}_task-rest"
        space = f"{func}_space-MNI152NLin2009cAsym_res-8"
        expected += [
            f"{func}_desc-confounds_timeseries.json",
            f"{func}_desc-confounds_timeseries.tsv",
            f"{space}_desc-brain_mask.nii.gz",
            f"{space}_desc-preproc_bold.json",
            f"{space}_desc-preproc_bold.nii.gz",
        ]
    assert found == sorted(expected)  # nothing else: no temporary files either


def test_participants_table_balances_sites_over_the_age_range(demo, participants):
    assert list(participants.columns) == ["participant_id", "age", "sex", "site"]
    assert list(participants["participant_id"]) == [f"sub-{i}" for i in subject_ids(8)]
    assert participants["age"].between(8.0, 80.0).all()
    assert (participants["age"] == participants["age"].round(1)).all()
    assert set(participants["sex"]) <= {"M", "F"}
    assert participants["site"].value_counts().to_dict() == {"siteA": 4, "siteB": 4}
    for _, ages in participants.groupby("site")["age"]:
        assert ages.min() < 30 and ages.max() > 58  # each site spans the range
    sidecar = json.loads((demo / "participants.json").read_text())
    assert set(sidecar) == {"participant_id", "age", "sex", "site"}
    assert sidecar["age"]["Units"] == "year"


def test_dataset_description_is_a_bids_derivative(demo):
    description = json.loads((demo / "derivatives" / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "brainage demo"
    assert description["GeneratedBy"][0]["Description"] == "synthetic fMRIPrep-format data"
    assert description["GeneratedBy"][0]["Version"] == source_version()
    assert description["brainage"]["seed"] == SEED


def test_bold_and_mask_images(demo, participants, grid):
    paths = func_paths(demo, "sub-001", 8)
    bold, mask = nib.load(paths["bold"]), nib.load(paths["mask"])
    assert bold.shape == grid.mask.shape + (PARAMS["n_timepoints"],)
    assert bold.header.get_zooms() == (8.0, 8.0, 8.0, 2.5)
    assert int(bold.header["sform_code"]) == 4  # MNI152
    np.testing.assert_allclose(bold.affine, grid.affine)
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(mask.dataobj), grid.mask.astype(np.uint8))
    data = np.asarray(bold.dataobj)
    assert not data[~grid.mask].any()  # zero outside the brain
    means = [_bold(demo, pid, grid)[1:].mean() for pid in participants["participant_id"]]
    assert 900 < np.mean(means) < 1100 and min(means) > 700
    frames = _bold(demo, "sub-001", grid).mean(axis=1)
    assert frames[0] / frames[1:].mean() == pytest.approx(1.3, rel=0.02)  # non-steady state


def test_bold_sidecar(demo):
    path = func_paths(demo, "sub-002", 8)["bold"]
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["RepetitionTime"] == 2.5
    assert sidecar["TaskName"] == "rest"
    assert sidecar["SkullStripped"] is False
    assert sidecar["StartTime"] == pytest.approx(1.25)
    assert "SYNTHETIC" in sidecar["Description"]


# --- confounds -------------------------------------------------------------------------------


def _confounds(demo, participant_id="sub-001"):
    path = func_paths(demo, participant_id, 8)["confounds"]
    return pd.read_csv(path, sep="\t"), json.loads(path.with_suffix(".json").read_text())


def test_confounds_have_the_columns_and_metadata_of_fmriprep(demo, shared_data):
    table, meta = _confounds(demo)
    example_dir = shared_data / "fmriprep_confounds_format_example"
    example = pd.read_csv(example_dir / "test-v21_desc-confounds_timeseries.tsv", sep="\t")
    example_meta = json.loads((example_dir / "test-v21_desc-confounds_timeseries.json").read_text())

    def stems(columns):
        return {re.sub(r"\d+$", "", c) for c in columns}

    assert stems(table.columns) == stems(example.columns)
    assert len(table) == PARAMS["n_timepoints"]
    # n/a in the first row exactly where fMRIPrep writes it: differences with the previous frame.
    first_na = {"framewise_displacement", "dvars", "std_dvars", "rmsd"}
    first_na |= {c for c in table if c.endswith(("derivative1", "derivative1_power2"))}
    assert set(table.columns[table.iloc[0].isna()]) == first_na
    assert not table.iloc[1:].isna().any().any()
    assert table["non_steady_state_outlier00"].tolist() == [1.0] + [0.0] * (len(table) - 1)
    # Metadata: the same entries and fields as fMRIPrep's.
    means = {k for k, v in meta.items() if v == {"Method": "Mean"}}
    assert means == {k for k, v in example_meta.items() if v == {"Method": "Mean"}}
    compcor_columns = sorted(c for c in table if "_comp_cor_" in c)
    assert sorted(k for k in meta if "_comp_cor_" in k) == compcor_columns
    masks = {"a": "combined", "c": "CSF", "w": "WM"}
    for name in compcor_columns:
        reference = example_meta[f"{name[0]}_comp_cor_00"]
        assert set(meta[name]) == set(reference) and meta[name]["Method"] == reference["Method"]
        assert meta[name]["Retained"] is True
        if name[0] in masks:
            assert meta[name]["Mask"] == masks[name[0]]
    for prefix in "tcwa":
        cumulative = [meta[c]["CumulativeVarianceExplained"] for c in compcor_columns if c[0] == prefix]
        # fMRIPrep keeps the components that explain 50 % of the variance, and no more.
        assert cumulative and np.all(np.diff(cumulative) > 0) and cumulative[-1] >= 0.5
        assert len(cumulative) == 1 or cumulative[-2] < 0.5


def test_framewise_displacement_column_is_power_fd_of_the_motion_columns(demo):
    table, _ = _confounds(demo, "sub-004")
    step = table[MOTION].diff().abs()
    expected = step[MOTION[:3]].sum(axis=1) + 50.0 * step[MOTION[3:]].sum(axis=1)
    np.testing.assert_allclose(table["framewise_displacement"].iloc[1:], expected.iloc[1:], rtol=1e-9)
    assert (table["framewise_displacement"] > 0.5).any()  # the planted spikes


STRATEGIES = [
    (("motion",), {"motion": "basic"}, 6),
    (("motion",), {"motion": "full"}, 24),
    (("wm_csf",), {"wm_csf": "full"}, 8),
    (("global_signal",), {"global_signal": "full"}, 4),
    (("high_pass",), {}, None),
    (("high_pass", "compcor"), {"compcor": "anat_combined", "n_compcor": "all"}, None),
    (("scrub",), {"fd_threshold": 0.5, "std_dvars_threshold": 3.0, "scrub": 5}, 0),
    (("non_steady_state",), {}, 0),
]


@pytest.mark.parametrize(("strategy", "options", "n_columns"), STRATEGIES)
def test_nilearn_load_confounds_reads_every_strategy(demo, strategy, options, n_columns):
    from nilearn.interfaces.fmriprep import load_confounds

    table, _ = _confounds(demo)
    if n_columns is None:  # every cosine, and every combined-mask aCompCor component
        n_columns = sum(c.startswith("cosine") for c in table)
        n_columns += sum(c.startswith("a_comp_cor") for c in table) if "compcor" in strategy else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non_steady_state is always detected"
        confounds, sample_mask = load_confounds(
            str(func_paths(demo, "sub-001", 8)["bold"]), strategy=strategy, **options
        )
    assert confounds.shape == (PARAMS["n_timepoints"], n_columns)
    assert not confounds.isna().any().any()
    assert 0 not in sample_mask  # the non-steady-state volume is always dropped
    if "scrub" in strategy:
        fd = table["framewise_displacement"].to_numpy()
        assert not set(np.flatnonzero(fd > 0.5)) & set(sample_mask)
        assert len(sample_mask) < PARAMS["n_timepoints"] - 1


def test_fd_and_rmsd_known_answers():
    motion = np.zeros((4, 6))
    motion[2, 0], motion[2, 5] = 1.0, 0.01  # 1 mm along x and 0.01 rad about z in frame 2
    np.testing.assert_allclose(framewise_displacement(motion), [np.nan, 0.0, 1.5, 1.5])
    motion = np.zeros((3, 6))
    motion[1, :2] = [3.0, 4.0]
    np.testing.assert_allclose(rms_displacement(motion), [np.nan, 5.0, 5.0])
    motion = np.zeros((2, 6))
    motion[1, 3] = 0.01  # RMS over an 80 mm sphere of a small rotation: 80 / sqrt(5) * angle
    np.testing.assert_allclose(rms_displacement(motion)[1], 80.0 / np.sqrt(5.0) * 0.01)


def test_dvars_known_answers():
    bold = np.full((4, 50), 500.0)
    bold[2] = 505.0  # every voxel +1 % in frame 2; the median scaling maps 500 to 1000
    with np.errstate(divide="ignore", invalid="ignore"):  # constant voxels: standardised DVARS undefined
        raw, _ = dvars(bold)
    np.testing.assert_allclose(raw, [np.nan, 0.0, 10.0, 10.0])
    # Standardised DVARS of temporally white data is ~1 (Nichols 2013).
    noise = 1000.0 + np.random.default_rng(0).standard_normal((200, 3000))
    _, std = dvars(noise)
    assert np.nanmean(std) == pytest.approx(1.0, abs=0.03)


def test_compcor_matches_nipype(monkeypatch):
    monkeypatch.setenv("NIPYPE_NO_ET", "1")  # no online version check
    from nipype.algorithms.confounds import compute_noise_components

    rng = np.random.default_rng(1)
    bold = 1000.0 + rng.standard_normal((81, 300)).cumsum(axis=0) + rng.standard_normal((81, 300))
    masks = {"CSF": np.arange(300) < 120, "WM": np.arange(300) >= 150}
    components, cosine, meta = compcor(bold, masks, tr=2.0, n_dummy=1)
    reference, basis, ref_meta = compute_noise_components(
        bold[1:].T[:, None, None, :],
        [nib.Nifti1Image(m.astype(np.uint8)[:, None, None], np.eye(4)) for m in masks.values()],
        components_criterion=0.5, filter_type="cosine", period_cut=128, repetition_time=2.0, mask_names=list(masks),
    )
    kept = np.flatnonzero(ref_meta["retained"])
    assert [m["Mask"] for m in meta] == [ref_meta["mask"][i] for i in kept]
    np.testing.assert_allclose([m["SingularValue"] for m in meta], ref_meta["singular_value"][kept], rtol=1e-6)
    np.testing.assert_allclose([m["VarianceExplained"] for m in meta], ref_meta["variance_explained"][kept], rtol=1e-6)
    np.testing.assert_allclose(np.abs(components[1:]), np.abs(reference), atol=1e-6)  # up to sign
    assert cosine.shape == (81, 1)
    np.testing.assert_allclose(cosine[1:], basis, atol=1e-12)
    assert not components[0].any() and not cosine[0].any()  # the dummy frame gets zeros


def test_cosine_basis_follows_fmriprep_128s_high_pass():
    basis = cosine_basis(100, 2.0)
    assert basis.shape == (100, 2)  # floor(2 * 200 s / 128 s) - 1 regressors
    np.testing.assert_allclose(basis.T @ basis, np.eye(2), atol=1e-12)
    assert cosine_basis(20, 2.0).shape == (20, 0)


# --- determinism -----------------------------------------------------------------------------


def _snapshot(out):
    tables = {p.name: pd.read_csv(p, sep="\t") for p in sorted(out.rglob("*.tsv"))}
    images = {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.rglob("*_bold.nii.gz"))}
    return tables, images


def test_same_seed_same_data_and_threads_do_not_matter(tmp_path):
    generate_demo(tmp_path / "a", SMALL, 11)
    generate_demo(tmp_path / "b", SMALL, 11, n_threads=2)
    generate_demo(tmp_path / "c", SMALL, 12)
    (tables_a, images_a), (tables_b, images_b), (tables_c, images_c) = (
        _snapshot(tmp_path / d) for d in "abc"
    )
    assert tables_a.keys() == tables_b.keys() and len(images_a) == 4
    for name in tables_a:
        pd.testing.assert_frame_equal(tables_a[name], tables_b[name])
    for name in images_a:
        np.testing.assert_array_equal(images_a[name], images_b[name])
        assert not np.array_equal(images_a[name], images_c[name])
    assert not tables_a["participants.tsv"].equals(tables_c["participants.tsv"])


# --- planted effects and nuisance --------------------------------------------------------------


def test_node_signals_have_exactly_the_planted_correlations():
    rng = np.random.default_rng(5)
    for age in (8.0, 44.0, 80.0):
        coupling = age_coupling(age, 8.0, 80.0)
        corr = np.corrcoef(node_signals(rng, coupling, 100, 2.0))
        same = (NETWORK[:, None] == NETWORK[None]) & ~np.eye(len(NODES), dtype=bool)
        np.testing.assert_allclose(corr[same], coupling.network + coupling.shared, atol=1e-4)
        np.testing.assert_allclose(corr[NETWORK[:, None] != NETWORK[None]], coupling.shared, atol=1e-4)
    young, old = age_coupling(8.0, 8.0, 80.0), age_coupling(80.0, 8.0, 80.0)
    assert young.network + young.shared == pytest.approx(0.9) and old.network + old.shared == pytest.approx(0.5)
    assert (young.shared, old.shared) == pytest.approx((0.02, 0.4))


def test_band_limited_signals_stay_in_the_band():
    series = band_limited(np.random.default_rng(0), 50, 200, 2.0, (0.01, 0.1))
    np.testing.assert_allclose(series.std(axis=1), 1.0, rtol=1e-4)
    power = np.abs(np.fft.rfft(series, axis=1)) ** 2
    freqs = np.fft.rfftfreq(200, 2.0)
    assert power[:, (freqs < 0.01) | (freqs > 0.1)].sum() < 1e-6 * power.sum()


def test_local_coherence_in_nodes_falls_with_age_as_planted(grid):
    # z-scored node voxels: sqrt(p) * node signal + sqrt(1 - p) * own signal, so the
    # spatial SD inside a node frame is ~sqrt(1 - p); control nodes keep p = 0.5.
    effect = np.isin(NETWORK, LOCAL_EFFECT_NETWORKS)
    for age, rng in ((8.0, np.random.default_rng(1)), (80.0, np.random.default_rng(2))):
        coupling = age_coupling(age, 8.0, 80.0)
        signal = neural_signal(rng, grid, coupling, 200, 2.0)
        z = (signal - signal.mean(axis=0)) / signal.std(axis=0)
        for node in range(len(NODES)):
            spread = z[:, grid.node == node].std(axis=1).mean()
            expected = np.sqrt(1.0 - (coupling.local if effect[node] else 0.5))
            assert spread == pytest.approx(expected, abs=0.06), (age, NODES[node][0])


def test_network_coupling_vs_age_in_the_generated_images(demo, participants, grid):
    same = (NETWORK[:, None] == NETWORK[None]) & ~np.eye(len(NODES), dtype=bool)
    within, between = [], []
    for pid in participants["participant_id"]:
        bold = _bold(demo, pid, grid)
        means = np.stack([bold[:, grid.node == i].mean(axis=1) for i in range(len(NODES))], axis=1)
        corr = np.corrcoef(_denoised(demo, pid, means).T)
        within.append(corr[same].mean())
        between.append(corr[NETWORK[:, None] != NETWORK[None]].mean())
    age = participants["age"]
    # 8 subjects x 60 frames give noisy correlations (over seeds 3-6, rho -0.83 to -0.9 within,
    # 0.52 to 0.9 between, -0.9 to -0.98 for their difference, which carries both effects).
    assert spearmanr(within, age)[0] < -0.7
    assert spearmanr(between, age)[0] > 0.4
    assert spearmanr(np.subtract(within, between), age)[0] < -0.85


def test_local_coherence_vs_age_survives_zscoring_and_block_averaging(demo, participants, grid):
    # Voxels -> 2x2x2 block means of node voxels -> denoise -> z-score each block over time ->
    # spatial SD over a node's blocks in each frame. Averaging before cleaning is exact (both
    # are linear) and cleans 8x fewer series.
    effect = np.isin(NETWORK, LOCAL_EFFECT_NETWORKS)
    shape = [n // 2 for n in grid.mask.shape]

    def blocks(volume):  # (x, y, z, ...) -> (x/2 * y/2 * z/2, 8, ...)
        cropped = volume[: shape[0] * 2, : shape[1] * 2, : shape[2] * 2]
        split = cropped.reshape(shape[0], 2, shape[1], 2, shape[2], 2, *volume.shape[3:])
        return np.moveaxis(split, (1, 3, 5), (3, 4, 5)).reshape(-1, 8, *volume.shape[3:])

    labels = blocks(grid.to_volume(grid.node + 1, dtype=np.int16))  # (n_blocks, 8)
    block_node = [np.flatnonzero((labels == i + 1).sum(axis=1) >= 5) for i in range(len(NODES))]
    used = np.concatenate(block_node)
    spread = {True: [], False: []}
    for pid in participants["participant_id"]:
        node_bold = np.where(grid.node >= 0, _bold(demo, pid, grid), 0.0)
        coarse = blocks(grid.to_volume(node_bold)).mean(axis=1)[used].T  # (n_timepoints, n_used)
        clean = _denoised(demo, pid, coarse)
        z = dict(zip(used, ((clean - clean.mean(axis=0)) / clean.std(axis=0)).T))
        for is_effect in (True, False):
            values = [
                np.std([z[b] for b in block_node[i]], axis=0).mean() for i in np.flatnonzero(effect == is_effect)
            ]
            spread[is_effect].append(np.mean(values))
    age = participants["age"]
    # Older: less coherent, more speckled frames (rho 0.81-0.95 over seeds 3-6).
    assert spearmanr(spread[True], age)[0] > 0.7
    assert spearmanr(spread[True], age)[0] > spearmanr(spread[False], age)[0] + 0.3


def test_motion_contaminates_raw_voxels(demo, participants, grid):
    explained = []
    for pid in participants["participant_id"]:
        table, _ = _confounds(demo, pid)
        keep = np.array(table["framewise_displacement"].fillna(0) < 0.5)
        keep[0] = False
        bold = _bold(demo, pid, grid)[keep][:, grid.edge > 0.9]
        bold -= bold.mean(axis=0)
        motion = table[MOTION].to_numpy()[keep]
        design = np.column_stack([motion - motion.mean(axis=0), np.linspace(-1.0, 1.0, keep.sum())])
        residual = bold - design @ np.linalg.lstsq(design, bold, rcond=None)[0]
        explained.append(1.0 - residual.var(axis=0).mean() / bold.var(axis=0).mean())
    assert min(explained) > 0.15  # motion explains a good part of edge-voxel variance


def test_sites_differ_in_intensity_noise_and_motion(demo, participants, grid):
    sites = make_sites(["siteA", "siteB"], grid, SEED)
    assert len({s.scale for s in sites}) == len({s.offset for s in sites}) == 2
    assert len({s.noise_sd for s in sites}) == len({s.motion for s in sites}) == 2
    np.testing.assert_allclose([s.pattern.std() for s in sites], 1.0, rtol=1e-5)
    means = np.array([_bold(demo, pid, grid)[1:].mean() for pid in participants["participant_id"]])
    is_a = (participants["site"] == "siteA").to_numpy()
    between = (means[is_a].mean() - means[~is_a].mean()) ** 2 / 4
    assert between / means.var() > 0.5  # site explains most of the between-subject intensity variance


# --- errors and command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"tr": None}, "demo parameters lack demo.tr"),
        ({"sites": []}, r"demo.sites must be distinct labels, at least one; found \[\]"),
        ({"sites": ["a", "a"]}, "demo.sites must be distinct labels"),
        ({"n_subjects": 1}, r"demo.n_subjects \(1\) is smaller than the number of sites \(2\)"),
        ({"n_timepoints": 5}, "demo.n_timepoints must be >= 10, found 5"),
        ({"voxel_size": 5}, r"demo.voxel_size must be one of \(2, 3, 4, 6, 8\), found 5"),
        ({"tr": 0.0}, "demo.tr must be > 0 s, found 0.0"),
        ({"age_min": 80.0}, "demo.age_min must be >= 0 and < demo.age_max, found 80.0 and 80.0"),
    ],
)
def test_generate_demo_rejects_bad_parameters(tmp_path, change, match):
    params = {k: v for k, v in {**PARAMS, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=match):
        generate_demo(tmp_path, params, 0)
    assert not any(tmp_path.iterdir())


def test_generate_demo_rejects_zero_threads(tmp_path):
    with pytest.raises(ConfigError, match="n_threads must be >= 1, found 0"):
        generate_demo(tmp_path, PARAMS, 0, n_threads=0)


def test_cli_generate_verb(tmp_path, capsys):
    params = {**SMALL, "n_timepoints": 12}
    argv = ["generate", "--params", json.dumps(params), "--seed", "4", "--out-dir", str(tmp_path / "demo")]
    assert main([*argv, "--threads", "2"]) == 0
    assert len(pd.read_csv(tmp_path / "demo" / "participants.tsv", sep="\t")) == 4
    bad = ["generate", "--params", json.dumps({**params, "voxel_size": 5}), "--seed", "4", "--out-dir", str(tmp_path)]
    assert main(bad) == 1
    assert "demo.voxel_size must be one of" in capsys.readouterr().err
