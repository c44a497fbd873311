"""Per-subject extraction: denoised ROI series (per atlas), downsampled volumes and QC from one read of the BOLD."""


rule extract_subject:
    """Denoise one subject's BOLD; write ROI series, masked downsampled volumes and a QC record."""
    input:
        unpack(extract_inputs),
    output:
        # One ROI-series file per atlas: the first atlas's (read by the ROI models), then the others.
        series=f"results/extract/sub-{{subject}}/sub-{{subject}}_atlas-{PRIMARY_ATLAS}_timeseries.parquet",
        more_series=expand(
            "results/extract/sub-{{subject}}/sub-{{subject}}_atlas-{atlas}_timeseries.parquet",
            atlas=list(ATLASES)[1:],
        ),
        volumes="results/extract/sub-{subject}/sub-{subject}_volumes.parquet",
        qc="results/extract/sub-{subject}/sub-{subject}_qc.json",
    log:
        "logs/extract/sub-{subject}.log",
    conda:
        "../envs/brainage.yaml"
    params:
        cfg=config_json("extract"),
        code=code_hash("brainage.extract.__main__"),
        confounds=confounds_arg,
    shell:
        "python -m brainage.extract subject --participant-id sub-{wildcards.subject}"
        " --bold {input.bold:q} --mask {input.mask:q} {params.confounds}"
        " --atlas {input.atlases:q} --params {params.cfg:q}"
        " --series-out {output.series:q} {output.more_series:q} --volumes-out {output.volumes:q}"
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
            code=code_hash("brainage.download.pcp"),
        shell:
            "python -m brainage.download pcp-rois --participant-id sub-{wildcards.subject}"
            " --rois {input.rois:q} --params {params.cfg:q} --series-out {output.series:q}"
            " --qc-out {output.qc:q} > {log:q} 2>&1"
