"""fMRIPrep, one job per subject, for raw BIDS datasets (INDI downloads or a local inputs.bids_dir);
derivative inputs never reach this file's rules.

Input functions and the derivative names: rules/common_preprocess.smk.
"""


wildcard_constraints:
    funcdir="(ses-[A-Za-z0-9]+/)?func",
    entities="[A-Za-z0-9]+-[A-Za-z0-9]+(_[A-Za-z0-9]+-[A-Za-z0-9]+)*",


if ((INDI and RAW_DATASETS) or LOCAL_BIDS) and TEMPLATEFLOW:

    localrules:
        templateflow_prefetch,

    rule templateflow_prefetch:
        """Fetch the TemplateFlow templates fMRIPrep needs (a local rule: compute nodes may be offline)."""
        output:
            table=f"{PREP['templateflow']['home']}/brainage_templates.tsv",
        log:
            "logs/templateflow_prefetch.log",
        conda:
            "../envs/brainage.yaml"
        # The archive's address is not what is fetched: like the INDI transport settings, it
        # travels in resources (no rerun trigger).
        resources:
            archive=json.dumps(
                {k: PREP["templateflow"][k] for k in ("bucket", "endpoint_url")}
            ),
        params:
            cfg=json.dumps(
                {k: PREP["templateflow"][k] for k in ("templates", "resolutions")},
                sort_keys=True,
            ),
            space=f"{SPACE}:res-{RES}" if RES else SPACE,
            home=PREP["templateflow"]["home"],
            code=code_hash("brainage.preprocess.__main__"),
        shell:
            "python -m brainage.preprocess templateflow --params {params.cfg:q}"
            " --archive {resources.archive:q} --space {params.space:q} --home {params.home:q}"
            " --out {output.table:q} --no-progress > {log:q} 2>&1"


if (INDI and RAW_DATASETS) or LOCAL_BIDS:

    rule fmriprep_subject:
        """Preprocess one subject's BOLD run with fMRIPrep; check the derivatives, record the version."""
        input:
            unpack(fmriprep_inputs),
        output:
            **PREP_FILES,
            record="results/preprocess/sub-{subject}/{funcdir}/sub-{subject}_{entities}_fmriprep.json",
        log:
            "logs/fmriprep/sub-{subject}/{funcdir}/sub-{subject}_{entities}.log",
        conda:
            "../envs/brainage.yaml"
        threads: 8
        resources:
            mem_mb=fmriprep_mem_mb,
            runtime=fmriprep_runtime,
        params:
            command=fmriprep_command,
            bids_filter=fmriprep_filter,
            work=fmriprep_work,
            version=PREP["version"],
            engine=PREP["engine"],
            image=brainage.preprocess.command.FmriprepParams.from_dict(PREP).image_name
            or "",
        # No code hash in params: a change to brainage's own check must not rerun hours of fMRIPrep
        # (a change to the command it builds shows in params.command).
        # fMRIPrep's exit code is kept, not fatal: the check then reports it with the log tail,
        # the missing derivatives and the crash files (its message goes to the console and the log).
        shell:
            "mkdir -p {params.work:q} && printf '%s\\n' {params.bids_filter:q} > {params.work:q}/bids_filter.json"
            " && {params.command} --nthreads {threads} --omp-nthreads $(( {threads} < 8 ? {threads} : 8 ))"
            " --mem-mb $(( {resources.mem_mb} * 9 / 10 )) > {log:q} 2>&1 || rc=$?;"
            " python -m brainage.preprocess check --participant-id sub-{wildcards.subject}"
            " --exit-code ${{rc:-0}} --expect {output.bold:q} {output.bold_json:q} {output.mask:q}"
            " {output.confounds:q} {output.confounds_json:q} --log {log:q}"
            " --crash-search results/fmriprep/sub-{wildcards.subject} {params.work:q}"
            " --version {params.version:q} --description results/fmriprep/dataset_description.json"
            " --record-out {output.record:q} --engine {params.engine:q} --image={params.image:q}"
            " --command {params.command:q} 2>&1 | tee -a {log:q}"
