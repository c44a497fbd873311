"""The report: figures, metrics, QC and exclusions, and a methods paragraph from the parameters."""


rule report:
    """Write results/report.html from the evaluation, the cohort, the exclusions, the extraction QC and the model cards."""
    input:
        manifest=rules.participants_manifest.output.manifest,
        cohort=rules.dataset_build.output.cohort,
        exclusions=rules.dataset_build.output.exclusions,
        metrics=rules.evaluate.output.metrics,
        predictions=rules.evaluate.output.predictions,
        cards=model_outputs("card.json"),
        fmriprep_records=fmriprep_records,
        extract_qc=subject_outputs("qc"),
        atlases=built_atlases,
    output:
        page=report(
            "results/report.html",
            caption="captions/report.rst",
            category="1. Report",
            labels={"file": "report.html"},
        ),
        figures=report(
            directory("results/report_figures"),
            patterns=["{model}.png"],
            caption="captions/figure.rst",
            category="2. Figures",
            labels={"model": "{model}"},
        ),
    log:
        "logs/report.log",
    conda:
        "../envs/brainage.yaml"
    params:
        cfg=json.dumps(config, sort_keys=True),
        code=code_hash("brainage.report.__main__"),
    shell:
        "python -m brainage.report build --config {params.cfg:q} --manifest {input.manifest:q}"
        " --cohort {input.cohort:q} --exclusions {input.exclusions:q}"
        " --metrics {input.metrics:q} --predictions {input.predictions:q}"
        " --cards {input.cards:q} --fmriprep-records {input.fmriprep_records:q}"
        " --extract-qc {input.extract_qc:q} --atlases {input.atlases:q}"
        " --out {output.page:q} --figures-out {output.figures:q} > {log:q} 2>&1"
