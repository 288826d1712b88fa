rule train_detector:
    """Train the detector on the kept photos whose fish boxes are known (the synthetic sources')
    and that no dataset holds out."""
    input:
        # ancient: a new clean table reruns it only where the photos it trains on differ
        # (params rows); it makes the splits it needs itself (see DATASET_SPECS). Through the
        # checkpoint, as split_dataset's: while cleaning is to run, a dry run lists it.
        clean=lambda wc: ancient(checkpoints.clean_images.get().output.table),
        records=expand(layout.RECORDS, source=config["sources"]),
        derived=ancient(DERIVED),
        cli=after_cleaning(CLI),
        code=step_code("train-detector"),
    output:
        weights=f"{DETECTOR_FOLDER}/weights.pt",
        meta=f"{DETECTOR_FOLDER}/meta.json",
    log:
        "logs/train_detector/{detector}.log",
    benchmark:
        "benchmarks/train_detector/{detector}.tsv"
    wildcard_constraints:
        detector=detectors_by_training(True),
    # Ahead of the models: the crops wait on it, and started last it ran alone at the demo's end.
    priority: 1
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
    params:
        spec=lambda wc: as_json(
            {**DETECT["training"], "train_photos": DETECT["train_photos"]}
        ),
        folder=lambda wc, output: str(Path(output.weights).parent),
        synthetic=SYNTHETIC_SOURCES,
        rows=detect_rows("train_detector"),
        datasets=DATASET_SPECS,
    shell:
        step_shell("train-detector")


# A download runs where Snakemake runs (a cluster's login node has the network that compute
# nodes often lack), never as a cluster job.
localrules:
    fetch_detector,


rule fetch_detector:
    """A detector used as it comes (detect.detector owlv2): its files, in huggingface_hub's layout
    under its cache (detect.owlv2.cache, models--org--name/snapshots/<revision>/), found there or
    downloaded once; the output records its settings and the files with their SHA-256. Offline,
    missing files stop the run with the model and the folder to put them in."""
    input:
        cli=CLI,
    output:
        f"{DETECTOR_FOLDER}/meta.json",
    log:
        "logs/fetch_detector/{detector}.log",
    wildcard_constraints:
        detector=detectors_by_training(False),
    conda:
        ENV
    params:
        spec=lambda wc: as_json(DETECT[wc.detector]),
        folder=lambda wc, output: str(Path(output[0]).parent),
        offline=config["offline"],
    shell:
        step_shell("fetch-detector")


rule detect_fish:
    """The detector's boxes in every kept photo, a crop of the largest fish of each (with its
    box, margin and detector: its provenance), the queue of photos without a fish, and the
    detector's mAP@0.5 on the test photos whose boxes are known. A photo this detector has
    looked at before is not looked at again (results/detect/found)."""
    input:
        detector=lambda wc: detector_files(),
        # ancient: a new clean table reruns it only where the photos it looks at (or is scored
        # on) differ (params rows); it makes the splits it needs itself (see DATASET_SPECS).
        # Through the checkpoint, as split_dataset's: while cleaning is to run, a dry run lists it.
        clean=lambda wc: ancient(checkpoints.clean_images.get().output.table),
        records=expand(layout.RECORDS, source=config["sources"]),
        derived=ancient(DERIVED),
        cli=after_cleaning(CLI),
        code=step_code("detect"),
    output:
        boxes="results/detect/boxes.tsv",
        crops=CROPS,
        queue="results/detect/no_fish.tsv",
        quality="results/detect/quality.json",
        store=directory(CROP_STORE),
        sheet="results/detect/crops.png",
    log:
        "logs/detect_fish.log",
    benchmark:
        "benchmarks/detect_fish.tsv"
    priority: 1
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
    params:
        detector=lambda wc: crop_settings()["detector"],
        threshold=lambda wc: crop_settings()["threshold"],
        padding=lambda wc: crop_settings()["padding"],
        folder=lambda wc: detector_folder(),
        # Not an output: Snakemake would empty it before each run.
        found=layout.DETECT_FOUND,
        synthetic=SYNTHETIC_SOURCES,
        rows=detect_rows("detect_fish"),
        datasets=DATASET_SPECS,
    shell:
        step_shell("detect")


rule cache_crops:
    """Like cache_images, of each photo's crop (its whole photo where no fish was found)."""
    input:
        split=layout.SPLIT,
        derived=ancient(DERIVED),
        # ancient: detect_fish rewrites the crops of every photo when any kept photo comes or
        # goes; a dataset's crops change only with its photos (split), the detector, how it
        # crops (params cropping) or the detect code, each an input here.
        crops=ancient(CROPS),
        crop_store=ancient(CROP_STORE),
        detector=lambda wc: detector_files(),
        cli=after_cleaning(CLI),
        code=step_code("cache"),
        crop_code=step_code("detect"),
    output:
        "results/cache/{dataset}/{size}px-crops.pt",
    log:
        "logs/cache_crops/{dataset}-{size}px.log",
    benchmark:
        "benchmarks/cache_crops/{dataset}-{size}px.tsv"
    conda:
        ENV
    resources:
        mem_mb=memory_mb("cache_images", split_pixels_mb),
    params:
        cropping=lambda wc: as_json(crop_settings()),
    shell:
        step_shell("cache")
