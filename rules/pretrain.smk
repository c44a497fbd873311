"""Self-supervised pretraining of the cnn_rnn frame encoder: one job per outer fold (when models.cnn_rnn.pretrain)."""


rule pretrain_encoder:
    """Pretrain the frame encoder contrastively (no ages) on one outer fold's training subjects."""
    input:
        cohort=rules.dataset_build.output.cohort,
        splits=rules.dataset_build.output.splits,
        data=subject_outputs("volumes"),
    output:
        encoder="results/models/pretrain/fold-{fold}/encoder.pt",
        card="results/models/pretrain/fold-{fold}/card.json",
    log:
        "logs/pretrain/fold-{fold}.log",
    conda:
        "../envs/brainage.yaml"
    threads: 1
    resources:
        mem_mb=train_mem_mb,
        gpu=train_gpus,
    params:
        cfg=pretrain_params,
        seed=config["seed"],
        code=code_hash("brainage.pretrain.__main__"),
    shell:
        "python -m brainage.pretrain encoder --fold {wildcards.fold}"
        " --cohort {input.cohort:q} --splits {input.splits:q} --inputs {input.data:q}"
        " --params {params.cfg:q} --seed {params.seed} --threads {threads}"
        " --out {output.encoder:q} > {log:q} 2>&1"
