"""Looking at the data: likely label errors (`fishid label-issues`) and the local review
app (`fishid review`), which reads the pipeline's tables and writes only the user's
decisions (config/exclusions.tsv, config/relabels.tsv)."""
