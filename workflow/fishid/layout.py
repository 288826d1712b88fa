"""Where a project keeps each stage's files (relative to the project folder): the rules and
the commands that read a project's results (the review app's plan) share these."""

STORE = "resources/images"
RECORDS = "resources/records/{source}.tsv"
DOWNLOADS = "resources/downloads/{source}.tsv"
CLEAN_TABLE = "results/clean/images.tsv"
DERIVED = "results/clean/derived"
# The per-image work of cleaning, by SHA-256 (fishid.clean.stage.cache_root_for DERIVED).
CLEAN_CACHE = "results/clean/measures"
# The boxes each detector found, per photo (fishid.detect.found).
DETECT_FOUND = "results/detect/found"
SPLIT = "results/splits/{dataset}.tsv"
