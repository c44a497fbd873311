"""Inputs: the embedded demo cohort, INDI downloads and the atlas."""

if DEMO:

    rule demo_cohort:
        """Generate the embedded synthetic cohort in fMRIPrep 23-25 layout (seeded, offline)."""
        output:
            participants="resources/demo/participants.tsv",
            bold=expand(BOLD, subject=SUBJECTS),
            bold_json=expand(BOLD_JSON, subject=SUBJECTS),
            mask=expand(MASK, subject=SUBJECTS),
            confounds=expand(CONFOUNDS, subject=SUBJECTS),
            confounds_json=expand(CONFOUNDS_JSON, subject=SUBJECTS),
        log:
            "logs/demo_cohort.log",
        conda:
            "../envs/brainage.yaml"
        threads: 2
        params:
            cfg=config_json("demo"),
            seed=config["seed"],
            code=code_hash("demo"),
        shell:
            "python -m brainage.demo generate --params {params.cfg:q} --seed {params.seed}"
            " --threads {threads} --out-dir resources/demo > {log:q} 2>&1"


rule atlas:
    """Build the offline default atlas (k-means parcels of the MNI152 brain mask) or check a given one."""
    input:
        atlas_source,
    output:
        img="resources/atlas/atlas_dseg.nii.gz",
        labels="resources/atlas/atlas_dseg.tsv",
    log:
        "logs/atlas.log",
    conda:
        "../envs/brainage.yaml"
    params:
        cfg=config_json("atlas"),
        seed=config["seed"],
        code=code_hash("download"),
    shell:
        "python -m brainage.download atlas --params {params.cfg:q} --seed {params.seed}"
        " --out {output.img:q} --labels-out {output.labels:q} > {log:q} 2>&1"


if INDI:

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
            code=code_hash("download"),
            out_dir=lambda wildcards: f"resources/indi/{wildcards.dataset}",
        shell:
            "python -m brainage.download indi --entry {params.entry:q} --indi {resources.indi:q}"
            " --seed {params.seed} --out-dir {params.out_dir:q} --manifest-out {output.manifest:q}"
            " --files-out {output.files:q} --exclusions-out {output.exclusions:q} > {log:q} 2>&1"

    rule indi_download:
        """Target: download every listed dataset without analysing it (e.g. raw BIDS for fMRIPrep)."""
        input:
            expand(rules.indi_fetch.output.files, dataset=DATASETS),
