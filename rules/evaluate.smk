"""Evaluation: age-bias correction fitted on training folds only, and the metrics table."""


rule evaluate:
    """Gather every model's test-fold predictions; correct age bias; compute MAE, RMSE, r, R²."""
    input:
        model_outputs("predictions.parquet"),
    output:
        predictions="results/evaluate/predictions.parquet",
        metrics=report(
            "results/evaluate/metrics.tsv",
            caption="captions/metrics.rst",
            category="3. Metrics",
            labels={"file": "metrics.tsv"},
        ),
    log:
        "logs/evaluate.log",
    conda:
        "../envs/brainage.yaml"
    params:
        cfg=config_json("evaluate"),
        seed=config["seed"],
        code=code_hash("brainage.evaluate.__main__"),
    shell:
        "python -m brainage.evaluate run --predictions {input:q} --params {params.cfg:q} --seed {params.seed}"
        " --predictions-out {output.predictions:q} --metrics-out {output.metrics:q}"
        " > {log:q} 2>&1"
