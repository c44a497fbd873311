"""Per-subject extraction: denoised ROI series, downsampled volumes and QC from one read of the BOLD."""


rule extract_subject:
    """Denoise one subject's BOLD; write ROI series, masked downsampled volumes and a QC record."""
    input:
        unpack(extract_inputs),
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
        confounds=confounds_arg,
    shell:
        "python -m brainage.extract subject --participant-id sub-{wildcards.subject}"
        " --bold {input.bold:q} --mask {input.mask:q} {params.confounds}"
        " --atlas {input.atlas:q} --atlas-labels {input.labels:q} --params {params.cfg:q}"
        " --series-out {output.series:q} --volumes-out {output.volumes:q}"
        " --qc-out {output.qc:q} > {log:q} 2>&1"


if INDI:

    rule pcp_rois_subject:
        """Convert one subject's ABIDE PCP ROI series (.1D) to the Parquet ROI-series schema, with QC."""
        input:
            rois=indi_file("series"),
        output:
            series="results/pcp/sub-{subject}/sub-{subject}_timeseries.parquet",
            qc="results/pcp/sub-{subject}/sub-{subject}_qc.json",
        log:
            "logs/pcp/sub-{subject}.log",
        conda:
            "../envs/brainage.yaml"
        params:
            cfg=pcp_params,
            code=code_hash("download/pcp"),
        shell:
            "python -m brainage.download pcp-rois --participant-id sub-{wildcards.subject}"
            " --rois {input.rois:q} --params {params.cfg:q} --series-out {output.series:q}"
            " --qc-out {output.qc:q} > {log:q} 2>&1"
