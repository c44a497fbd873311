"""Training: one job per (model, fold), on the shared folds table."""


def model_params(wildcards):
    """One model's parameters as canonical JSON (only that model reruns when they change)."""
    return json.dumps(config["models"][wildcards.model], sort_keys=True)


def train_dir(wildcards):
    """The folder of one training job (predictions, model card, checkpoint)."""
    return f"results/models/model-{wildcards.model}/fold-{wildcards.fold}"


def train_mem_mb(wildcards, attempt):
    """Memory for a training job, raised on each retry."""
    return 4000 * attempt


rule train_model:
    """Fit one model on the training folds; predict the test fold and the inner (out-of-sample) split."""
    input:
        cohort=rules.dataset_build.output.cohort,
        splits=rules.dataset_build.output.splits,
        data=model_inputs,
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
    params:
        cfg=model_params,
        seed=config["seed"],
        code=code_hash("train", "models"),
        out_dir=train_dir,
    shell:
        "python -m brainage.train model --model {wildcards.model} --fold {wildcards.fold}"
        " --cohort {input.cohort:q} --splits {input.splits:q} --inputs {input.data:q}"
        " --params {params.cfg:q} --seed {params.seed} --threads {threads}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"
