# fishid: public species photos -> cleaned, split, audited dataset -> every model of the
# clownfish study -> evaluation -> report. Logic lives in workflow/fishid; rules only wire it.
from snakemake.utils import min_version

min_version("9.0")


# A configuration given with --configfile is the whole configuration (Snakemake would
# otherwise merge it into this default key by key: the demo's synthetic source and models
# would join the real study's). `--config key=value` overrides keys either way.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# Snakemake's job rate limiter (--max-jobs-per-timespan, 100/1s by default) wakes the scheduler
# every second once more for each job that has started or finished so far
# (snakemake/snakemake#3744): on the demo's 2 cores its main process spent about 75 CPU-seconds
# selecting, again and again, jobs that had no core to run on. One machine has no queue to spare;
# a cluster keeps the limit.
onstart:
    if workflow.local_exec:
        workflow.scheduler.job_rate_limiter = None
    RESIDENT_WORKER.append(start_resident_worker())


onsuccess:
    stop_resident_worker(RESIDENT_WORKER)


onerror:
    stop_resident_worker(RESIDENT_WORKER)


include: "workflow/rules/common.smk"
include: "workflow/rules/sources.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/clean.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/provenance.smk"
include: "workflow/rules/review.smk"


rule all:
    input:
        "results/report/index.html",
        "results/provenance/attribution.csv",
        "results/provenance/citation.md",
        "results/provenance/derived_dataset.tsv",
        "results/review/label_issues.tsv",
        # The detect stage's score and its queue, where the configuration has one.
        "results/detect/quality.json" if DETECT else [],
