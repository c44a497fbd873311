"""The participants manifest, the analysed cohort, the exclusions and one folds table for all models."""

if INDI:

    rule participants_manifest:
        """Merge the downloaded datasets' manifests and download exclusions into one manifest."""
        input:
            manifests=expand(rules.indi_fetch.output.manifest, dataset=DATASETS),
            exclusions=expand(rules.indi_fetch.output.exclusions, dataset=DATASETS),
        output:
            manifest="results/participants.tsv",
            exclusions="results/participants_exclusions.tsv",
        log:
            "logs/participants_manifest.log",
        conda:
            "../envs/brainage.yaml"
        params:
            code=code_hash("brainage.participants.__main__"),
        shell:
            "python -m brainage.participants merge --manifests {input.manifests:q}"
            " --exclusions {input.exclusions:q} --out {output.manifest:q}"
            " --exclusions-out {output.exclusions:q} > {log:q} 2>&1"

else:

    rule participants_manifest:
        """Normalise participants.tsv into the manifest; record rows that cannot be used."""
        input:
            PARTICIPANTS,
        output:
            manifest="results/participants.tsv",
            exclusions="results/participants_exclusions.tsv",
        log:
            "logs/participants_manifest.log",
        conda:
            "../envs/brainage.yaml"
        params:
            dataset=config["inputs"]["dataset"],
            derivatives=DERIV,
            raw="--raw-bids" if LOCAL_BIDS else "",
            selection=selection_json(),
            # The runs found (a change in the derivatives folder reruns the manifest).
            runs=runs_digest(),
            exclude=json.dumps(config["inputs"]["exclude"], sort_keys=True),
            code=code_hash("brainage.participants.__main__"),
        shell:
            "python -m brainage.participants manifest --participants {input:q}"
            " --dataset {params.dataset:q} --derivatives {params.derivatives:q} {params.raw}"
            " --selection {params.selection:q} --exclude {params.exclude:q}"
            " --out {output.manifest:q} --exclusions-out {output.exclusions:q} > {log:q} 2>&1"


rule dataset_build:
    """Join the manifest with extraction QC; write the cohort, the folds and every exclusion."""
    input:
        manifest=rules.participants_manifest.output.manifest,
        exclusions=rules.participants_manifest.output.exclusions,
        qc=subject_outputs("qc"),
    output:
        cohort="results/dataset/cohort.parquet",
        splits="results/dataset/splits.tsv",
        exclusions="results/dataset/exclusions.tsv",
    log:
        "logs/dataset_build.log",
    conda:
        "../envs/brainage.yaml"
    params:
        cfg=config_json("dataset"),
        qc=config_json("qc"),
        seed=config["seed"],
        code=code_hash("brainage.dataset.__main__"),
    shell:
        "python -m brainage.dataset build --manifest {input.manifest:q}"
        " --participant-exclusions {input.exclusions:q} --qc {input.qc:q}"
        " --params {params.cfg:q} --qc-params {params.qc:q} --seed {params.seed} --cohort-out {output.cohort:q}"
        " --splits-out {output.splits:q} --exclusions-out {output.exclusions:q} > {log:q} 2>&1"
