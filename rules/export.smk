"""Outputs other tools can read: the ROI series, their correlation matrices and the atlases as BIDS derivatives."""


rule export_derivatives:
    """Write results/derivatives/brainage: the cohort's ROI series and Pearson matrices as XCP-D names them, the atlases, participants.tsv."""
    input:
        series=every_series,
        atlases=built_atlases,
        cohort=rules.dataset_build.output.cohort,
    # The whole folder: Snakemake removes it before the job and after a failed one, so a subject
    # that leaves the cohort leaves no files behind.
    output:
        directory("results/derivatives/brainage"),
    log:
        "logs/export_derivatives.log",
    conda:
        "../envs/brainage.yaml"
    params:
        # The sections that shape the exported data: their hash is recorded in dataset_description.json.
        cfg=export_config(),
        code=code_hash("brainage.export.__main__"),
    shell:
        "python -m brainage.export derivatives --series {input.series:q} --atlases {input.atlases:q}"
        " --cohort {input.cohort:q} --config {params.cfg:q} --out-dir {output:q} > {log:q} 2>&1"
