"""Inputs: the embedded demo cohort and the atlas (INDI downloads come here too)."""

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
