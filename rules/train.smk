"""Training: one job per (model, fold), on the shared folds table."""


rule train_model:
    """Fit one model on the training folds (inner K-fold cross-fit, then a refit on all of them);
    predict the test fold, and every training subject out of sample (the inner predictions).
    """
    input:
        cohort=rules.dataset_build.output.cohort,
        splits=rules.dataset_build.output.splits,
        data=model_inputs,
        encoder=pretrained_encoder,
        atlas=model_atlas,
    output:
        predictions="results/models/model-{model}/fold-{fold}/predictions.parquet",
        card="results/models/model-{model}/fold-{fold}/card.json",
    log:
        "logs/train/model-{model}_fold-{fold}.log",
    conda:
        "../envs/brainage.yaml"
    threads: 1
    resources:
        mem_mb=train_mem_mb,
        gpu=train_gpus,
    params:
        cfg=model_params,
        seed=config["seed"],
        code=code_hash("brainage.train.__main__"),
        out_dir=train_dir,
        init_encoder=init_encoder_arg,
        atlas=atlas_arg,
        launcher=train_launcher,
        inner_folds=config["train"]["inner_folds"],
        group_by_site="--group-by-site" if config["dataset"]["group_by_site"] else "",
    shell:
        "{params.launcher} -m brainage.train model --model {wildcards.model} --fold {wildcards.fold}"
        " --cohort {input.cohort:q} --splits {input.splits:q} --inputs {input.data:q}"
        " --params {params.cfg:q} --seed {params.seed} --threads {threads}"
        " --inner-folds {params.inner_folds} {params.group_by_site}"
        " --out-dir {params.out_dir:q} {params.init_encoder} {params.atlas} > {log:q} 2>&1"
