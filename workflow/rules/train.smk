rule cache_images:
    """Decode and resize a dataset's images once, for every epoch of every model to read."""
    input:
        split=layout.SPLIT,
        # The copies are named by content: a new split table (or derived settings, a split
        # param) is what brings new ones.
        derived=ancient(DERIVED),
        cli=after_cleaning(CLI),
        code=step_code("cache"),
    output:
        "results/cache/{dataset}/{size}px.pt",
    log:
        "logs/cache_images/{dataset}-{size}px.log",
    benchmark:
        "benchmarks/cache_images/{dataset}-{size}px.tsv"
    # About a second each, and every model of the dataset waits on it.
    priority: 3
    conda:
        ENV
    resources:
        mem_mb=memory_mb("cache_images", split_pixels_mb),
    shell:
        step_shell("cache", skip=["crops", "crop_store"])


rule pretrain_backbone:
    """Pre-train a whole ResNet-18 on a pool of other species: the offline stand-in for
    ImageNet weights, so that transfer learning in the demo is real."""
    input:
        cache=lambda wc: cache_for(backbone_settings(config, wc.backbone)),
        cli=after_cleaning(CLI),
        code=step_code("pretrain"),
    output:
        weights="results/backbones/{backbone}/weights.pt",
        history="results/backbones/{backbone}/history.csv",
        meta="results/backbones/{backbone}/meta.json",
    log:
        "logs/pretrain_backbone/{backbone}.log",
    benchmark:
        "benchmarks/pretrain_backbone/{backbone}.tsv"
    # Before everything else that is ready: every model on the backbone, and the queue, wait on it.
    priority: 2
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=memory_mb("pretrain_backbone", cache_mb),
    params:
        spec=lambda wc: as_json(backbone_settings(config, wc.backbone)),
    shell:
        step_shell("pretrain")


# Downloads of weights run where Snakemake runs (a cluster's login node, which has the
# network that compute nodes often lack), never as a cluster job.
localrules:
    imagenet_weights,
    open_clip_weights,


rule imagenet_weights:
    """torchvision's ImageNet ResNet-18 weights, checked against their hash; offline, a
    missing file stops the run with the place to put it."""
    input:
        cli=CLI,
    output:
        "{cache}/resnet18-f37072fd.pth",
    log:
        "logs/imagenet_weights/{cache}.log",
    conda:
        ENV
    params:
        offline=config["offline"],
    shell:
        step_shell("imagenet-weights")


rule open_clip_weights:
    """An open_clip model from the Hugging Face Hub (backbone `model: hf-hub:org/name`, e.g.
    BioCLIP): its open_clip_config.json and weights in huggingface_hub's layout under the
    backbone's cache, models--org--name/snapshots/<revision>/, which training jobs read
    without network; the output records the files and their SHA-256. Offline, missing files
    stop the run with the folder to put them in."""
    input:
        cli=CLI,
    output:
        "{cache}/models--{org}--{repo}.json",
    log:
        "logs/open_clip_weights/{cache}/{org}--{repo}.log",
    wildcard_constraints:
        # Hub names never hold "--" (the cache's separator).
        org=r"[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*",
        repo=r"[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*",
    conda:
        ENV
    params:
        model=lambda wc: f"hf-hub:{wc.org}/{wc.repo}",
        offline=config["offline"],
    shell:
        step_shell("open-clip-weights")


rule train_model:
    """Train one model of config['models']; its settings are params, so editing one model
    retrains that model only."""
    input:
        cache=lambda wc: cache_for(model_spec(wc.model)),
        backbone=lambda wc: backbone_file(model_spec(wc.model)),
        cli=after_cleaning(CLI),
        code=step_code("train"),
    output:
        weights="results/models/{model}/weights.pt",
        history="results/models/{model}/history.csv",
        meta="results/models/{model}/meta.json",
    log:
        "logs/train_model/{model}.log",
    benchmark:
        "benchmarks/train_model/{model}.tsv"
    priority: training_priority
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=memory_mb("train_model", cache_mb),
    params:
        spec=lambda wc: as_json(model_spec(wc.model)),
        backbone_spec=lambda wc: as_json(backbone_spec(model_spec(wc.model))),
        other_label=lambda wc: other_label(model_spec(wc.model)["dataset"]),
        offline=config["offline"],
    shell:
        step_shell("train")
