rule split_dataset:
    """The study's split: validation fraction per label, training capped per label; and the
    near-duplicate pairs across training and held-out photos (and the benchmark folders).
    """
    input:
        # ancient: a new clean table reruns the split only where the dataset's rows differ (params).
        clean=lambda wc: ancient(checkpoints.clean_images.get().output.table),
        benchmarks=list(BENCHMARKS.values()),
        cli=CLI,
        code=step_code("split"),
    output:
        split=layout.SPLIT,
        decisions="results/splits/{dataset}.decisions.tsv",
        counts="results/splits/{dataset}.counts.tsv",
        leaks="results/splits/{dataset}.leaks.tsv",
    log:
        "logs/split_dataset/{dataset}.log",
    benchmark:
        "benchmarks/split_dataset/{dataset}.tsv"
    # About a second each, and everything after cleaning waits on one: first, so that the
    # pre-training (priority 2), on which most models wait, starts as soon as cleaning ends.
    priority: 3
    conda:
        ENV
    params:
        spec=lambda wc: as_json(config["datasets"][wc.dataset]),
        rows=dataset_rows,
        derived=as_json(per_image_settings(config["clean"])),
        max_distance=NEAR_DUPLICATE_DISTANCE,
        benchmarks=as_json(BENCHMARKS),
    shell:
        step_shell("split")
