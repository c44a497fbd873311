"""Inputs: the embedded demo cohort, INDI downloads and the atlases."""

if DEMO:

    rule demo_cohort:
        """Generate the embedded synthetic cohort in fMRIPrep 23-25 layout (seeded, offline)."""
        output:
            participants="resources/demo/participants.tsv",
            bold=[str(run.bold) for runs in RUNS.values() for run in runs],
            bold_json=[str(run.bold_json) for runs in RUNS.values() for run in runs],
            mask=[str(run.mask) for runs in RUNS.values() for run in runs],
            confounds=[str(run.confounds) for runs in RUNS.values() for run in runs],
            confounds_json=[
                str(run.confounds.with_suffix(".json"))
                for runs in RUNS.values()
                for run in runs
            ],
        log:
            "logs/demo_cohort.log",
        conda:
            "../envs/brainage.yaml"
        threads: 2
        params:
            cfg=config_json("demo"),
            seed=config["seed"],
            code=code_hash("brainage.demo.__main__"),
        shell:
            "python -m brainage.demo generate --params {params.cfg:q} --seed {params.seed}"
            " --threads {threads} --out-dir resources/demo > {log:q} 2>&1"


# Atlases are fetched where the workflow is started (a cluster's login node has internet).
localrules:
    atlas,


rule atlas:
    """Build one atlas of the registry into resources/atlases/<id>: fetched once (nilearn or HTTPS), or made offline."""
    input:
        atlas_source,
    output:
        directory("resources/atlases/{atlas}"),
    log:
        "logs/atlas/{atlas}.log",
    conda:
        "../envs/brainage.yaml"
    # Where an atlas is downloaded from is not what it is: a mirror change reruns nothing.
    resources:
        urls=json.dumps(config["atlas_fetch"]["urls"], sort_keys=True),
    params:
        spec=lambda wildcards: json.dumps(ATLASES[wildcards.atlas], sort_keys=True),
        seed=config["seed"],
        data_dir=config["atlas_fetch"]["data_dir"],
        # The verb's function, not the whole download CLI (whose other verbs import the INDI
        # code): a change to the INDI download must not rebuild atlases and every extraction.
        code=code_hash("brainage.download.atlas.build"),
    shell:
        "python -m brainage.download atlas --spec {params.spec:q} --seed {params.seed}"
        " --data-dir {params.data_dir:q} --urls {resources.urls:q} --out-dir {output:q} > {log:q} 2>&1"


if INDI:

    # Downloads run where the workflow is started, like the atlases: compute nodes often have no
    # internet.
    localrules:
        indi_fetch,

    checkpoint indi_fetch:
        """Download one INDI dataset: phenotypes, then the selected subjects' files (verified, resumable)."""
        output:
            manifest="resources/indi/{dataset}/participants.tsv",
            files="resources/indi/{dataset}/files.tsv",
            exclusions="resources/indi/{dataset}/exclusions.tsv",
        log:
            "logs/indi_fetch/{dataset}.log",
        conda:
            "../envs/brainage.yaml"
        # How to reach the bucket (endpoint, parallelism, retries) is not what is downloaded:
        # resources, unlike params, are no rerun trigger, so tuning them reruns nothing. Each
        # file's size and MD5 are still checked, and a file whose content changed is fetched again.
        resources:
            indi=config_json("indi"),
        params:
            entry=lambda wildcards: json.dumps(
                DATASETS[wildcards.dataset], sort_keys=True
            ),
            seed=config["seed"],
            code=code_hash("brainage.download.indi_fetch"),
            out_dir=lambda wildcards: f"resources/indi/{wildcards.dataset}",
        shell:
            "python -m brainage.download indi --entry {params.entry:q} --indi {resources.indi:q}"
            " --seed {params.seed} --out-dir {params.out_dir:q} --manifest-out {output.manifest:q}"
            " --files-out {output.files:q} --exclusions-out {output.exclusions:q} > {log:q} 2>&1"

    rule indi_download:
        """Target: download every listed dataset without analysing it (e.g. raw BIDS for fMRIPrep)."""
        input:
            expand(rules.indi_fetch.output.files, dataset=DATASETS),
