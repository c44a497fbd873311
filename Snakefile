"""brainage: brain age from resting-state fMRI, from fMRIPrep-format inputs to a report."""

from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


include: "rules/config_syntax.smk"


# `snakemake --report report.zip`: our HTML report, each model's figure and metrics.tsv, with captions.
report: "rules/captions/workflow.rst"


# The working directory's own config/config.yaml when it has one (a copied or deployed workflow, or a
# run with --directory that brings its config); otherwise the defaults shipped next to this Snakefile,
# so `snakemake --directory /scratch/run` writes results/ there and still finds a config.
DEFAULT_CONFIG = "config/config.yaml"
if not Path(DEFAULT_CONFIG).is_file():
    DEFAULT_CONFIG = str(Path(workflow.basedir, DEFAULT_CONFIG))


configfile: DEFAULT_CONFIG


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
include: "rules/export.smk"


rule all:
    """The report, every results file it is built from (a missing one is rebuilt), and the BIDS-Derivatives export."""
    input:
        "results/report.html",
        rules.export_derivatives.output,
        final_outputs,
