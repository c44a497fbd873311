"""brainage: brain age from resting-state fMRI, from fMRIPrep-format inputs to a report."""

from snakemake.utils import min_version

min_version("9.0")


include: "rules/config_syntax.smk"


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
    """The report, and every results file it is built from (a missing one is rebuilt)."""
    input:
        "results/report.html",
        final_outputs,
