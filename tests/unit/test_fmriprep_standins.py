"""The fMRIPrep stand-ins: the command the real fmriprep-docker builds, fMRIPrep-format derivatives, failures."""

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from fmriprep_standins import calls, entities, install, matches, sidecar

FMRIPREP_DOCKER = Path(sys.executable).parent / "fmriprep-docker"
STEM = "sub-1_ses-1_task-rest_acq-2_run-1"
SPACE = "space-MNI152NLin2009cAsym_res-4"
N_FRAMES = 60  # 150 s at TR 2.5 s: one DCT cosine under fMRIPrep's 128 s cut-off
FILTER = {"bold": {"datatype": "func", "suffix": "bold", "session": "1", "task": "rest", "acquisition": "2", "run": 1}}
EXAMPLE = "fmriprep_confounds_format_example/test-v21_desc-confounds_timeseries"
STANDIN_VARS = ("FS_LICENSE", "STANDIN_MODE", "STANDIN_MEAN_FD", "STANDIN_MIN_MEM_MB", "TEMPLATEFLOW_HOME")


def _bold(path: Path, n_frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).normal(100.0, 5.0, (4, 4, 4, n_frames)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0])), path)


def _write_bids(root: Path) -> Path:
    """sub-1: ses-1 acq-2 runs 1 (60 frames, own TR 2.5 s) and 2, ses-2 run 1; sub-2: one run, no session."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0"}))
    (root / "task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0, "TaskName": "rest"}))
    _bold(root / "sub-1/ses-1/func" / f"{STEM}_bold.nii.gz", N_FRAMES)
    (root / "sub-1/ses-1/func" / f"{STEM}_bold.json").write_text(json.dumps({"RepetitionTime": 2.5}))
    _bold(root / "sub-1/ses-1/func/sub-1_ses-1_task-rest_acq-2_run-2_bold.nii.gz", 12)
    _bold(root / "sub-1/ses-2/func/sub-1_ses-2_task-rest_run-1_bold.nii.gz", 12)
    _bold(root / "sub-2/func/sub-2_task-rest_bold.nii.gz", 20)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One template-grid cache for every stand-in call of this module."""
    return tmp_path_factory.mktemp("grid-cache")


@pytest.fixture()
def project(tmp_path):
    """A folder with bids/, a license file ``lic`` and a BIDS filter ``f.json``."""
    _write_bids(tmp_path / "bids")
    (tmp_path / "lic").write_text("user@example.org\n12345\n")
    (tmp_path / "f.json").write_text(json.dumps(FILTER))
    return tmp_path


def _run(cmd, folder, cache, **env) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``folder`` with ``folder/bin`` first on PATH and none of the caller's stand-in settings."""
    base = {k: v for k, v in os.environ.items()
            if k not in STANDIN_VARS and not k.startswith(("APPTAINERENV_", "SINGULARITYENV_"))}
    base |= {"PATH": f"{folder / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
             "STANDIN_CACHE_DIR": str(cache)}
    return subprocess.run(cmd, cwd=folder, env=base | env, capture_output=True, text=True, timeout=120)


def _native(project, cache, *args, labels=("1",), **env):
    command = ["fmriprep", "bids", "out", "participant", "--participant-label", *labels, *args]
    return _run(command, project, cache, **env)


@pytest.fixture(scope="module")
def docker_run(tmp_path_factory, cache):
    """The real fmriprep-docker run once with the stand-ins first on PATH: (folder, record, result)."""
    if not FMRIPREP_DOCKER.is_file():
        pytest.skip(f"fmriprep-docker is not installed beside {sys.executable}")
    folder = tmp_path_factory.mktemp("docker")
    _write_bids(folder / "bids")
    (folder / "lic").write_text("user@example.org\n")
    (folder / "f.json").write_text(json.dumps(FILTER))
    install(folder / "bin", folder / "calls.jsonl")
    result = _run([str(FMRIPREP_DOCKER), "bids", "out", "participant", "--participant-label", "1", "--no-tty",
                   "--fs-license-file", "lic", "-w", "work", "--bids-filter-file", "f.json",
                   "--output-spaces", "MNI152NLin2009cAsym:res-4", "--fs-no-reconall", "--notrack"], folder, cache)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, folder / "calls.jsonl", result


def _confounds(folder: Path, stem: str = STEM) -> tuple[pd.DataFrame, dict]:
    path = next((folder / "out").rglob(f"{stem}_desc-confounds_timeseries.tsv"))
    return pd.read_csv(path, sep="\t"), json.loads(path.with_suffix(".json").read_text())


def _families(columns) -> list[str]:
    """Column names with each numbered family (t_comp_cor_00, 01, ...) collapsed to its first place."""
    names = [re.sub(r"(comp_cor_|cosine|outlier)\d+$", r"\1#", c) for c in columns]
    return list(dict.fromkeys(names))


def test_fmriprep_docker_runs_the_docker_command_it_builds(docker_run):
    folder, record, result = docker_run
    probes = [c["argv"] for c in calls(record, "docker")]
    assert probes[:4] == [["version"], ["images", "-q", "nipreps/fmriprep:25.2.7"],
                          ["run", "--rm", "--entrypoint=free", "nipreps/fmriprep:25.2.7", "-m"],
                          ["version", "--format", "{{.Server.Version}}"]]
    assert probes[4] == [
        "run", "--rm", "-e", "DOCKER_VERSION_8395080871=27.3.1",
        "-v", f"{folder}/lic:/opt/freesurfer/license.txt:ro", "-v", f"{folder}/bids:/data:ro",
        "-v", f"{folder}/out:/out", "-v", f"{folder}/work:/scratch", "-v", f"{folder}/f.json:/tmp/bids_filter.json",
        "nipreps/fmriprep:25.2.7", "/data", "/out", "participant", "--participant-label", "1", "--fs-no-reconall",
        "--notrack", "-w", "/scratch", "--bids-filter-file", "/tmp/bids_filter.json",
        "--output-spaces", "MNI152NLin2009cAsym:res-4"]
    assert len(probes) == 5 and calls(record, "docker")[4]["cwd"] == str(folder)
    assert "RUNNING: docker run --rm" in result.stdout and "fMRIPrep finished successfully!" in result.stdout
    assert "output path: /out" in result.stdout  # fMRIPrep logs the paths it sees inside the container


def test_docker_run_writes_fmriprep_derivatives_of_the_filtered_run_only(docker_run):
    folder = docker_run[0]
    out = folder / "out"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    func = f"sub-1/ses-1/func/{STEM}"
    assert written == ["dataset_description.json", "sub-1.html",
                       f"{func}_desc-confounds_timeseries.json", f"{func}_desc-confounds_timeseries.tsv",
                       f"{func}_{SPACE}_desc-brain_mask.nii.gz", f"{func}_{SPACE}_desc-preproc_bold.json",
                       f"{func}_{SPACE}_desc-preproc_bold.nii.gz"]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "fMRIPrep" and description["GeneratedBy"][0]["Version"] == "25.2.7"
    assert (folder / "work" / "fmriprep_25_2_wf").is_dir()  # -w /scratch reached the host's work/


def test_preprocessed_bold_is_on_nilearns_mni152_grid_with_the_raw_frames(docker_run):
    from nilearn.datasets import load_mni152_brain_mask

    prefix = next((docker_run[0] / "out").rglob(f"{STEM}_{SPACE}_desc-preproc_bold.nii.gz")).as_posix()[:-7]
    bold, mask = nib.load(f"{prefix}.nii.gz"), nib.load(prefix.replace("preproc_bold", "brain_mask") + ".nii.gz")
    template = load_mni152_brain_mask(resolution=1)
    expected_affine = template.affine @ np.diag([4.0, 4.0, 4.0, 1.0])  # same origin, 4 mm voxels
    assert bold.shape == (*np.ceil(np.array(template.shape) / 4).astype(int), N_FRAMES)
    np.testing.assert_allclose(bold.affine, expected_affine)
    np.testing.assert_allclose(mask.affine, expected_affine)
    assert bold.header.get_zooms() == (4.0, 4.0, 4.0, 2.5) and bold.get_data_dtype() == np.float32
    inside = np.asarray(mask.dataobj) == 1
    assert abs(inside.sum() * 64 / (np.asarray(template.dataobj) > 0).sum() - 1) < 0.05
    data = np.asarray(bold.dataobj)
    assert np.all(data[inside] > 100) and not data[~inside].any()  # signal in the mask only
    means = data[inside].mean(axis=0)
    assert means[0] > 1.2 * np.median(means)  # the non-steady-state first frame
    assert json.loads(Path(f"{prefix}.json").read_text()) == {
        "RepetitionTime": 2.5, "SkullStripped": False, "TaskName": "rest",
        "Sources": [f"bids:raw:sub-1/ses-1/func/{STEM}_bold.nii.gz"]}


def test_confounds_have_the_columns_order_and_metadata_of_the_real_example(docker_run, shared_data):
    table, meta = _confounds(docker_run[0])
    example = pd.read_csv(shared_data / f"{EXAMPLE}.tsv", sep="\t")
    example_meta = json.loads((shared_data / f"{EXAMPLE}.json").read_text())
    assert _families(table.columns) == _families(example.columns)
    assert len(table) == N_FRAMES
    # n/a in the first row exactly where fMRIPrep writes it, and nowhere else.
    assert set(table.columns[table.iloc[0].isna()]) == set(example.columns[example.iloc[0].isna()])
    assert not table.iloc[1:].isna().any().any()
    assert table["non_steady_state_outlier00"].tolist() == [1.0] + [0.0] * (N_FRAMES - 1)
    compcor = sorted(c for c in table if "_comp_cor_" in c)
    assert compcor and sorted(k for k in meta if "_comp_cor_" in k) == compcor
    for name in compcor:
        assert set(meta[name]) == set(example_meta[f"{name[0]}_comp_cor_00"])
    means = {k for k, v in example_meta.items() if v == {"Method": "Mean"}}
    assert {k for k, v in meta.items() if v == {"Method": "Mean"}} == means


def test_framewise_displacement_is_powers_fd_of_the_motion_at_the_default_mean(docker_run):
    table, _ = _confounds(docker_run[0])
    motion = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    step = table[motion].diff().abs()
    expected = step[motion[:3]].sum(axis=1) + 50.0 * step[motion[3:]].sum(axis=1)
    np.testing.assert_allclose(table["framewise_displacement"][1:], expected[1:], rtol=1e-6)
    assert table["framewise_displacement"].mean() == pytest.approx(0.12, rel=0.05)
    assert table[motion[:3]].abs().max().max() < 5.0  # mm: a plausible resting-state run


@pytest.mark.parametrize(("strategy", "options", "n_columns"), [
    (("motion",), {"motion": "full"}, 24),
    (("wm_csf",), {"wm_csf": "basic"}, 2),
    (("high_pass",), {}, 1),
    (("motion", "scrub"), {"motion": "basic", "fd_threshold": 0.2, "std_dvars_threshold": 100.0, "scrub": 0}, 6),
    (("high_pass", "compcor"), {"compcor": "anat_combined", "n_compcor": "all"}, None),
])
def test_nilearn_load_confounds_reads_the_confounds(docker_run, strategy, options, n_columns):
    from nilearn.interfaces.fmriprep import load_confounds

    bold = next((docker_run[0] / "out").rglob(f"{STEM}_{SPACE}_desc-preproc_bold.nii.gz"))
    table, _ = _confounds(docker_run[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        confounds, sample_mask = load_confounds(str(bold), strategy=strategy, **options)
    if n_columns is None:  # the cosine and every combined-mask aCompCor component
        n_columns = 1 + sum(c.startswith("a_comp_cor_") for c in table)
    assert confounds.shape == (N_FRAMES, n_columns) and not confounds.isna().any().any()
    assert 0 not in sample_mask  # the non-steady-state frame
    if "scrub" in strategy:
        high = set(np.flatnonzero(table["framewise_displacement"].to_numpy() > 0.2))
        assert high and not high & set(sample_mask) and len(sample_mask) == N_FRAMES - 1 - len(high - {0})


def test_mean_fd_is_planted_per_subject(project, cache):
    install(project / "bin", project / "calls.jsonl")
    result = _native(project, cache, "--fs-license-file", "lic", "--output-spaces", "MNI152NLin2009cAsym:res-8",
                     labels=("1", "2"), STANDIN_MEAN_FD=json.dumps({"2": 0.5}))
    assert result.returncode == 0, result.stderr
    runs = sorted((project / "out").rglob("*_desc-confounds_timeseries.tsv"))
    assert len(runs) == 4  # no filter: every run of both subjects
    for path in runs:
        fd = pd.read_csv(path, sep="\t")["framewise_displacement"]
        assert fd.mean() == pytest.approx(0.5 if path.name.startswith("sub-2") else 0.12, rel=0.05)


def test_native_fmriprep_reports_its_version_and_finds_the_license_in_fs_license(project, cache):
    install(project / "bin", project / "calls.jsonl", version="24.1.1")
    assert _run(["fmriprep", "--version"], project, cache).stdout == "fMRIPrep v24.1.1\n"
    filter_file = project / "f2.json"
    filter_file.write_text(json.dumps({"bold": {"session": "2"}}))
    result = _native(project, cache, "--bids-filter-file", "f2.json", "--output-spaces", "MNI152NLin6Asym:res-8",
                     "--nthreads", "8", "--omp-nthreads", "8", "--mem-mb", "14400", "--dummy-scans", "4",
                     FS_LICENSE=str(project / "lic"), TEMPLATEFLOW_HOME="/tf", APPTAINERENV_X="1", OTHER="no")
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (project / "out").rglob("*.nii.gz"))
    assert written == [f"sub-1_ses-2_task-rest_run-1_space-MNI152NLin6Asym_res-8_desc-{d}.nii.gz"
                       for d in ("brain_mask", "preproc_bold")]
    table, _ = _confounds(project, "sub-1_ses-2_task-rest_run-1")
    assert [c for c in table if c.startswith("non_steady")] == [f"non_steady_state_outlier0{i}" for i in range(4)]
    recorded = calls(project / "calls.jsonl", "fmriprep")
    assert [c["argv"][:1] for c in recorded] == [["--version"], ["bids"]]  # argv without the program name
    assert recorded[1]["env"] == {"FS_LICENSE": str(project / "lic"), "TEMPLATEFLOW_HOME": "/tf",
                                  "APPTAINERENV_X": "1"}
    assert json.loads((project / "out/dataset_description.json").read_text())["GeneratedBy"][0]["Version"] == "24.1.1"


def test_without_a_license_fmriprep_exits_1(project, cache):
    install(project / "bin", project / "calls.jsonl")
    result = _native(project, cache)
    assert result.returncode == 1 and "a valid license file is required for FreeSurfer" in result.stderr
    # fmriprep-docker mounts no license when given none: the container has none either.
    result = _run([str(FMRIPREP_DOCKER), "bids", "out", "participant", "--participant-label", "1", "--no-tty"],
                  project, cache)
    assert result.returncode == 1 and "a valid license file is required for FreeSurfer" in result.stderr
    assert not (project / "out" / "sub-1").exists()


@pytest.mark.parametrize("tool", ["apptainer", "singularity"])
def test_apptainer_and_singularity_act_through_their_binds_and_clean_environment(project, cache, tool):
    install(project / "bin", project / "calls.jsonl")
    (project / "work").mkdir()
    (project / "out").mkdir()
    (project / "work" / "bids_filter.json").write_text(json.dumps(FILTER))
    image = project / "fmriprep.sif"
    image.write_bytes(b"SIF")
    argv = ["run", "--cleanenv", "--env", "TEMPLATEFLOW_HOME=/templateflow",
            "-B", f"{project}/bids:/data:ro", "-B", f"{project}/out:/out", "-B", f"{project}/work:/work",
            "--bind", f"{project}/lic:/opt/fs/license.txt:ro",
            str(image), "/data", "/out", "participant", "--participant-label", "1", "-w", "/work",
            "--bids-filter-file", "/work/bids_filter.json", "--output-spaces", "MNI152NLin2009cAsym:res-8"]
    # --cleanenv: the host's FS_LICENSE does not reach fMRIPrep; <TOOL>ENV_FS_LICENSE does.
    result = _run([tool, *argv], project, cache, FS_LICENSE="/opt/fs/license.txt")
    assert result.returncode == 1 and "a valid license file is required" in result.stderr
    passed = {f"{tool.upper()}ENV_FS_LICENSE": "/opt/fs/license.txt"}
    result = _run([tool, *argv], project, cache, **passed)
    assert result.returncode == 0, result.stderr
    func = project / "out" / "sub-1/ses-1/func"
    assert (func / f"{STEM}_space-MNI152NLin2009cAsym_res-8_desc-preproc_bold.nii.gz").is_file()
    assert len(list((project / "out").rglob("*_desc-preproc_bold.nii.gz"))) == 1  # the filter, read through /work
    assert (project / "work" / "fmriprep_25_2_wf").is_dir()
    recorded = calls(project / "calls.jsonl", tool)
    assert [c["argv"] for c in recorded] == [argv, argv] and recorded[1]["env"] == passed


@pytest.mark.parametrize(("bind", "image", "message"), [
    ("{p}/bids:/data", "missing.sif", "FATAL:   could not open image {p}/missing.sif"),
    ("{p}/nowhere:/data", "fmriprep.sif", "FATAL:   container creation failed: mount hook function failure: "
                                          "mount {p}/nowhere->/data error: mount source {p}/nowhere doesn't exist"),
])
def test_apptainer_fails_like_apptainer_without_image_or_bind_source(project, cache, bind, image, message):
    install(project / "bin", project / "calls.jsonl")
    (project / "fmriprep.sif").write_bytes(b"SIF")
    result = _run(["apptainer", "run", "-B", bind.format(p=project), image, "/data", "/out", "participant"],
                  project, cache)
    assert result.returncode == 255 and message.format(p=project) in result.stderr


def test_nothing_mode_exits_0_and_writes_nothing(project, cache):
    install(project / "bin", project / "calls.jsonl", mode="nothing")
    result = _native(project, cache, "--fs-license-file", "lic")
    assert result.returncode == 0 and "fMRIPrep finished successfully!" in result.stdout
    assert not (project / "out").exists()


def test_crash_mode_leaves_a_nipype_crash_file_and_exits_1(project, cache):
    install(project / "bin", project / "calls.jsonl", mode="crash")
    result = _native(project, cache, "--fs-license-file", "lic")
    assert result.returncode == 1
    (crash,) = (project / "out").rglob("crash-*")
    pattern = r"sub-1/log/20261124-120000_[0-9a-f-]{36}/crash-20261124-120000-user-bold_reg-[0-9a-f-]{36}\.txt"
    assert re.fullmatch(pattern, crash.relative_to(project / "out").as_posix())
    assert "Traceback (most recent call last)" in crash.read_text()
    assert "fMRIPrep failed: 1 nodes failed" in result.stderr
    assert "Saving crash info to out/sub-1/log/" in result.stderr  # the path as fMRIPrep sees it
    assert result.stderr.rstrip().endswith("RuntimeError: Workflow did not execute cleanly. Check log for details")
    assert not list((project / "out").rglob("*_bold.nii.gz"))


def test_standin_mode_overrides_the_mode_per_subject(project, cache):
    install(project / "bin", project / "calls.jsonl")
    result = _native(project, cache, "--fs-license-file", "lic", "--output-spaces", "MNI152NLin2009cAsym:res-8",
                     labels=("sub-1", "2"), STANDIN_MODE=json.dumps({"2": "crash"}), STANDIN_MIN_MEM_MB="100")
    assert result.returncode == 1
    assert len(list((project / "out/sub-1").rglob("*_desc-preproc_bold.nii.gz"))) == 3
    assert list((project / "out/sub-2/log").rglob("crash-*")) and not (project / "out/sub-2/func").exists()


@pytest.mark.parametrize(("args", "env", "code", "message"), [
    (("--fs-license-file", "lic"), {"STANDIN_MODE": '{"1": "explode"}'}, 2,
     "STANDIN_MODE gives 'explode' for 1; expected one of ['derivatives', 'nothing', 'crash']"),
    (("--fs-license-file", "lic", "--participant-label", "3"), {}, 1, "Could not find participants [3]"),
    (("--fs-license-file", "lic", "--bids-filter-file", "none.json"), {}, 2, "Path does not exist: <none.json>"),
    (("--fs-license-file", "lic", "--bids-filter-file", "f3.json"), {}, 1, "No BOLD images found for participant 1"),
    (("--fs-license-file", "lic", "--mem-mb", "14400"), {"STANDIN_MIN_MEM_MB": "20000"}, 137,
     "Killed (out of memory: this run needs 20000 MB)"),
])
def test_fmriprep_failures_exit_with_fmripreps_codes(project, cache, args, env, code, message):
    install(project / "bin", project / "calls.jsonl")
    (project / "f3.json").write_text(json.dumps({"bold": {"task": "movie"}}))
    result = _run(["fmriprep", "bids", "out", "participant", "--participant-label", "1", *args], project, cache, **env)
    assert result.returncode == code and message in result.stderr
    assert not list(project.glob("out/**/*.nii.gz"))


def test_every_call_is_recorded_and_unknown_commands_fail(project, cache):
    install(project / "bin", project / "calls.jsonl")
    assert _run(["docker", "images", "-q", "x:1"], project, cache).stdout.strip() == _run(
        ["docker", "images", "-q", "x:1"], project, cache).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{12}\n", _run(["docker", "images", "-q", "x:1"], project, cache).stdout)
    result = _run(["docker", "compose", "up"], project, cache)
    assert result.returncode == 1 and "'compose' is not a docker command" in result.stderr
    assert _run(["apptainer", "build", "x.sif"], project, cache).returncode == 255
    assert [c["argv"][0] for c in calls(project / "calls.jsonl")] == ["images"] * 3 + ["compose", "build"]
    assert [c["tool"] for c in calls(project / "calls.jsonl")][-1] == "apptainer"


def test_install_rejects_an_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match=r"mode 'explode' is not one of \['derivatives', 'nothing', 'crash'\]"):
        install(tmp_path / "bin", tmp_path / "calls.jsonl", mode="explode")


@pytest.mark.parametrize(("query", "selected"), [
    ({}, ["ses-1_task-rest_acq-2_run-1", "ses-1_task-rest_acq-2_run-2", "ses-2_task-rest_run-1"]),
    ({"session": "1", "run": 1}, ["ses-1_task-rest_acq-2_run-1"]),
    ({"run": "01", "acquisition": None}, ["ses-2_task-rest_run-1"]),  # run is an integer; null: no acq
    ({"session": ["2", "3"], "datatype": "func", "suffix": "bold"}, ["ses-2_task-rest_run-1"]),
    ({"suffix": "sbref"}, []),
])
def test_bids_filter_queries_select_runs_as_pybids_does(tmp_path, query, selected):
    root = _write_bids(tmp_path / "bids")
    runs = sorted(root.glob("sub-1/ses-*/func/*_bold.nii.gz"))
    assert [p.name[6:-12] for p in runs if matches(entities(p), query)] == selected


def test_run_metadata_is_inherited_from_the_nearest_sidecar(tmp_path):
    root = _write_bids(tmp_path / "bids")
    (root / "sub-1" / "sub-1_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 3.0, "EchoTime": 0.03}))
    (root / "task-movie_bold.json").write_text(json.dumps({"RepetitionTime": 9.0}))
    (root / "task-rest_acq-2_bold.json").write_text(json.dumps({"TaskName": "rest (acq-2)"}))  # beats task-rest
    run1, run2, other = sorted(root.glob("sub-1/ses-*/func/*_bold.nii.gz"))
    assert sidecar(run1, root) == {"RepetitionTime": 2.5, "TaskName": "rest (acq-2)", "EchoTime": 0.03}
    assert sidecar(run2, root) == {"RepetitionTime": 3.0, "TaskName": "rest (acq-2)", "EchoTime": 0.03}
    assert sidecar(other, root) == {"RepetitionTime": 3.0, "TaskName": "rest", "EchoTime": 0.03}
    assert entities(run1) == {"datatype": "func", "suffix": "bold", "extension": ".nii.gz", "subject": "1",
                              "session": "1", "task": "rest", "acquisition": "2", "run": 1}
