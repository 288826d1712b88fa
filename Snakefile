# fishid: public species photos -> cleaned, split, audited dataset -> every model of the
# clownfish study -> evaluation -> report. Logic lives in workflow/fishid; rules only wire it.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/sources.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/clean.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/provenance.smk"


rule all:
    input:
        "results/report/index.html",
        "results/provenance/attribution.csv",
