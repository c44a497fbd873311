"""Per-subject extraction: denoised ROI series, downsampled volumes and QC from one read of the BOLD."""


rule extract_subject:
    """Denoise one subject's BOLD; write ROI series, masked downsampled volumes and a QC record."""
    input:
        bold=BOLD,
        bold_json=BOLD_JSON,
        mask=MASK,
        confounds=CONFOUNDS,
        atlas=rules.atlas.output.img,
        labels=rules.atlas.output.labels,
    output:
        series="results/extract/sub-{subject}/sub-{subject}_timeseries.parquet",
        volumes="results/extract/sub-{subject}/sub-{subject}_volumes.parquet",
        qc="results/extract/sub-{subject}/sub-{subject}_qc.json",
    log:
        "logs/extract/sub-{subject}.log",
    conda:
        "../envs/brainage.yaml"
    params:
        cfg=config_json("extract"),
        code=code_hash("extract"),
    shell:
        "python -m brainage.extract subject --participant-id sub-{wildcards.subject}"
        " --bold {input.bold:q} --mask {input.mask:q} --confounds {input.confounds:q}"
        " --atlas {input.atlas:q} --atlas-labels {input.labels:q} --params {params.cfg:q}"
        " --series-out {output.series:q} --volumes-out {output.volumes:q}"
        " --qc-out {output.qc:q} > {log:q} 2>&1"
