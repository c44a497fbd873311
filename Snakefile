"""brainage: brain age from resting-state fMRI, from fMRIPrep-format inputs to a report."""

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/common_preprocess.smk"
include: "rules/download.smk"
include: "rules/preprocess.smk"
include: "rules/extract.smk"
include: "rules/dataset.smk"
include: "rules/pretrain.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    """The report, and through it every stage."""
    input:
        "results/report.html",
