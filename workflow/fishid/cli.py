"""`fishid` command line: one subcommand per pipeline step, called by the Snakemake rules.

Settings arrive as JSON (`--spec`), exactly as the rule declared them in `params`, so that
Snakemake reruns a step when, and only when, its settings change.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd


def _spec(text: str) -> dict:
    return json.loads(text)


def cmd_list(args):
    from fishid import web
    from fishid.sources import base as sources
    from fishid.sources import taxonomy
    from fishid.tables import RECORD_COLUMNS, write_table

    client = web.Client(web.Settings.from_spec(args.download))
    ranks = taxonomy.Settings.from_spec(args.taxonomy)
    context = sources.Context(args.source, args.seed, args.offline, client, taxonomy=ranks)
    records, summary = sources.list_source(args.source, args.spec, context)
    write_table(records, args.out, RECORD_COLUMNS)
    if args.summary:
        write_table(summary, args.summary, sources.SUMMARY_COLUMNS)
    logging.info("%s: %d records of %d taxa", args.source, len(records), records["taxon"].nunique())


def cmd_fetch(args):
    from fishid.download import fetch

    table = fetch.run(args.records, args.out, args.store, args.spec, args.offline, args.shard, args.reuse)
    failed = table[table["error"] != ""]
    logging.info(
        "%d stored, %d not: %s", len(table) - len(failed), len(failed), failed["error"].value_counts().head(8).to_dict()
    )


def cmd_gather_downloads(args):
    from fishid.download import fetch

    table = fetch.gather(args.records, args.shard_tables, args.out, args.journal)
    logging.info("%d rows from %d shard table(s)", len(table), len(args.shard_tables))


def cmd_clean(args):
    from fishid.clean import stage as clean

    table = clean.run(
        args.records,
        args.downloads,
        args.exclusions,
        args.store,
        args.derived,
        args.out,
        args.spec,
        args.threads,
        relabels_path=args.relabels,
        shard_tables=args.shard_tables,
    )
    dropped = table.loc[~table["kept"], "reason"].str.split(":").str[0].value_counts().to_dict()
    logging.info("kept %d of %d images; dropped: %s", table["kept"].sum(), len(table), dropped)


def cmd_clean_shard(args):
    from fishid.clean import stage as clean

    shard, shards = args.shard
    clean.run_shard(
        args.records, args.downloads, args.store, args.cache, args.out, args.spec, shard, shards, args.threads
    )


def cmd_split(args):
    from fishid.split import stage as split

    table = split.run(
        args.clean,
        args.name,
        args.spec,
        args.out,
        args.decisions,
        args.counts,
        args.leaks,
        args.max_distance,
        args.benchmarks,
    )
    logging.info("%s: %s", args.name, table.groupby(["label", "split"]).size().to_dict())


def cmd_cache(args):
    from fishid.train import imagecache

    cache = imagecache.build(args.split, args.derived, args.size, args.crops, args.crop_store)
    imagecache.save(cache, args.out)
    if args.crops:
        logging.info("%d of %d photos cropped to their fish", cache["cropped"], len(cache["sha256"]))


def cmd_train_detector(args):
    import torch

    from fishid.detect import stage as detect

    torch.set_num_threads(args.threads)
    detect.train(
        args.clean,
        args.derived,
        args.records,
        args.datasets,
        args.synthetic_sources,
        args.detector,
        args.spec,
        args.out,
    )


def cmd_detect(args):
    import torch

    from fishid.detect import stage as detect

    torch.set_num_threads(args.threads)
    result = detect.run(
        args.clean,
        args.derived,
        args.records,
        args.datasets,
        args.synthetic_sources,
        args.detector,
        args.folder,
        args.threshold,
        args.padding,
        args.boxes,
        args.crops,
        args.queue,
        args.quality,
        args.crop_store,
        args.sheet,
        args.found,
    )
    logging.info(
        "%d photos: %d cropped, %d without a fish; mAP@0.5 on %s %s",
        result["photos"],
        result["cropped"],
        result["no_fish_found"],
        result["evaluated_on"],
        result["quality"]["map50"],
    )


def _train(args, pretrain: bool):
    import torch

    from fishid.train import imagecache, record
    from fishid.train import stage as train

    torch.set_num_threads(args.threads)
    cache = imagecache.load(args.cache)
    if pretrain:
        result = train.pretrain_backbone(args.spec, cache)
    else:
        result = train.train_model(
            args.spec, cache, args.backbone, args.other_label, args.backbone_spec, allow_download=not args.offline
        )
    record.save(*result, args.weights, args.history, args.meta)


def cmd_imagenet_weights(args):
    from fishid.models import weights

    path = weights.ensure_imagenet_weights(args.cache_dir, allow_download=not args.offline)
    logging.info("verified %s", path)


def cmd_open_clip_weights(args):
    from fishid.models import weights

    files = weights.hub_files(args.model, args.cache_dir, allow_download=not args.offline)
    weights.write_hub_record(args.model, files, args.out)
    logging.info("%s: %s", args.model, ", ".join(str(path) for path in files.files))


def cmd_fetch_detector(args):
    from fishid.detect import detectors

    record = detectors.fetch_detector(args.detector, args.spec, args.out, allow_download=not args.offline)
    logging.info("detector %s: %s in %s", args.detector, record["snapshot"]["model"], record["snapshot"]["folder"])


def cmd_evaluate(args):
    import numpy as np
    import torch

    from fishid.evaluate import stage as evaluate
    from fishid.report import figures

    torch.set_num_threads(args.threads)
    result = evaluate.run(
        args.spec,
        args.name,
        args.weights,
        args.cache,
        args.split,
        args.other_label,
        args.predictions,
        args.metrics,
        args.figure_data,
    )
    logging.info("%s accuracy on %s: %.3f", args.name, result["evaluated_on"], result["accuracy"])
    # The figures are drawn here rather than in a step of their own: starting Python with
    # PyTorch and matplotlib costs more than drawing them (18 jobs fewer in the demo).
    figures.save_model_figures(
        args.name,
        pd.read_csv(args.history),
        json.loads(Path(args.metrics).read_text()),
        np.load(args.figure_data),
        args.figures,
        args.embedding_map,
    )


def cmd_plot_dataset(args):
    from fishid.report import figures

    counts = pd.read_csv(args.counts, sep="\t")
    figures.save(figures.dataset_table(counts, args.name), args.out)


def cmd_report(args):
    from fishid.report import html as report

    model_dirs = [Path(p).parent for p in args.metrics]
    report.build(
        args.spec,
        args.records,
        args.downloads,
        args.clean,
        args.counts,
        model_dirs,
        args.figures,
        args.out,
        decision_paths=args.decisions,
        citation_path=args.citation,
        derived_path=args.derived,
        leak_paths=args.leaks,
        label_issues_path=args.label_issues,
        detect_path=args.detect,
        detect_sheet_path=args.detect_sheet,
    )


def cmd_predict(args):
    from fishid.evaluate import predict
    from fishid.tables import table_text, write_text_atomic

    table = predict.predict_folder(Path(args.results) / "models" / args.model, args.folder)
    text = table_text(table, sep=",", float_format="%.6f")
    if args.out:
        write_text_atomic(args.out, text)
    else:
        sys.stdout.write(text)
    unreadable = table[table["error"] != ""]
    logging.info("%d images labelled, %d unreadable", len(table) - len(unreadable), len(unreadable))


def cmd_attribution(args):
    from fishid.report.attribution import attribution
    from fishid.tables import read_table, table_text, write_text_atomic

    splits = pd.concat([read_table(p) for p in args.splits], ignore_index=True)
    records = pd.concat([read_table(p) for p in args.records], ignore_index=True)
    downloads = pd.concat([read_table(p) for p in args.downloads], ignore_index=True)
    table = attribution(records, downloads, read_table(args.clean), splits)
    write_text_atomic(args.out, table_text(table, sep=","))
    logging.info("%d image(s), %d rights holder(s)", table["sha256"].nunique(), table["rights_holder"].nunique())


def cmd_citation(args):
    from fishid.report import citation
    from fishid.tables import read_table, write_table, write_text_atomic

    def tables(paths):
        return pd.concat([read_table(p) for p in paths], ignore_index=True)

    shown = citation.view(args.spec, tables(args.records), tables(args.downloads), tables(args.splits))
    write_text_atomic(args.out, citation.markdown(shown))
    write_table(pd.DataFrame(shown["derived_dataset"], columns=citation.DERIVED_COLUMNS), args.derived)
    logging.info("%d source(s), %d GBIF dataset(s)", len(shown["citations"]), len(shown["derived_dataset"]))


def cmd_audit(args):
    from fishid.report import audit

    prov = audit.load(args.root)
    if args.json:
        kind, chain = audit.audit(prov, args.query)
        print(json.dumps({"kind": kind, **chain}, indent=2, default=str))
    else:
        print(audit.report(prov, args.query))


def cmd_label_issues(args):
    import torch
    from threadpoolctl import threadpool_limits

    from fishid.review import label_issues
    from fishid.tables import read_table, write_table, write_text_atomic

    torch.set_num_threads(args.threads)
    # BLAS too (scikit-learn's regression): more threads than the job's cores only wait on each other.
    with threadpool_limits(args.threads):
        crops = (args.crops, args.crop_store) if args.crops else None
        table, summary = label_issues.label_issues(
            read_table(args.clean), args.derived, args.spec, args.backbone, args.seed, crops
        )
    write_table(table, args.out, label_issues.ISSUE_COLUMNS)
    write_text_atomic(args.summary, json.dumps(summary, indent=2) + "\n")
    logging.info(
        "%d of %d images flagged as likely label errors (%s); %d outliers; %d clusters",
        table["flagged"].sum(),
        len(table),
        args.spec["backbone"],
        summary.get("outliers", 0),
        summary.get("clusters", {}).get("count", 0),
    )


def cmd_embedding_map(args):
    import numpy as np

    from fishid.review import embedding_map
    from fishid.tables import read_table

    with open(args.metrics) as handle:
        metrics = json.load(handle)
    features = np.load(args.figure_data)["features"]
    data = embedding_map.compute(read_table(args.predictions), metrics, features, args.method, args.seed)
    embedding_map.write(data, args.out)
    logging.info("%s: %d points (%s)", metrics.get("model", ""), len(data["points"]), args.method)


def cmd_review(args):
    from fishid.review import server

    server.serve(args.root, args.host, args.port, args.configfile, args.token)


def _snapshot_remote(args) -> str:
    from fishid import snapshot

    return args.remote or snapshot.remote_from_config(Path(args.root) / args.config)


def cmd_snapshot(args):
    from fishid import snapshot

    names = snapshot.snapshot(args.root, _snapshot_remote(args))
    print(f"snapshot of {', '.join(names)} pushed; commit it with: git add snapshot/ && git commit")


def cmd_restore(args):
    from fishid import snapshot

    names = snapshot.restore(args.root, _snapshot_remote(args))
    print(f"restored {', '.join(names)}")


def cmd_init(args):
    from fishid import init_config, web

    client = web.Client(web.Settings.from_spec(args.download))
    # Written only once whole and validated: `fishid init X > file` never leaves half a configuration.
    sys.stdout.write(init_config.write(args.taxon, client, args.api, args.offline, args.download))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fishid", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, func, *arguments):
        s = sub.add_parser(name)
        s.set_defaults(func=func)
        for flags, kwargs in arguments:
            s.add_argument(*flags, **kwargs)
        return s

    spec = (["--spec"], {"type": _spec, "required": True, "help": "settings as JSON"})
    out = (["--out"], {"required": True})
    threads = (["--threads"], {"type": int, "default": 1})
    offline = (["--offline"], {"action": "store_true", "help": "fail rather than use the network"})
    shard = (
        ["--shard"],
        {"type": int, "nargs": 2, "metavar": ("INDEX", "COUNT"), "default": None, "help": "do shard INDEX of COUNT"},
    )
    command(
        "list",
        cmd_list,
        (["source"], {}),
        spec,
        (["--seed"], {"type": int, "default": 0}),
        (["--download"], {"type": _spec, "default": {}, "help": "HTTP client settings as JSON"}),
        (["--taxonomy"], {"type": _spec, "default": {}, "help": "name matching settings (taxonomy:) as JSON"}),
        (["--summary"], {"default": None, "help": "per-taxon counts and notes (TSV)"}),
        offline,
        out,
    )
    command(
        "fetch",
        cmd_fetch,
        (["--records"], {"required": True}),
        (["--store"], {"required": True}),
        (["--spec"], {"type": _spec, "default": {}, "help": "download settings and licence policy as JSON"}),
        offline,
        shard,
        (["--reuse"], {"nargs": "+", "default": [], "help": "journals whose finished downloads stand (read only)"}),
        out,
    )
    command(
        "gather-downloads",
        cmd_gather_downloads,
        (["--records"], {"required": True}),
        (["--shard-tables"], {"nargs": "+", "required": True}),
        (["--journal"], {"default": None, "help": "the source's journal, into which the shards' journals are merged"}),
        out,
    )
    command(
        "clean",
        cmd_clean,
        (["--records"], {"nargs": "+", "required": True}),
        (["--downloads"], {"nargs": "+", "required": True}),
        (["--exclusions"], {"required": True}),
        (["--relabels"], {"default": None, "help": "the user's relabellings (id, label, reason, when)"}),
        (["--store"], {"required": True}),
        (["--derived"], {"required": True}),
        (["--shard-tables"], {"nargs": "+", "default": None, "help": "the clean-shard tables (else: decode here)"}),
        spec,
        threads,
        out,
    )
    command(
        "clean-shard",
        cmd_clean_shard,
        (["--records"], {"nargs": "+", "required": True}),
        (["--downloads"], {"nargs": "+", "required": True}),
        (["--store"], {"required": True}),
        (["--cache"], {"required": True, "help": "the per-image cache (results/clean/measures)"}),
        (["--shard"], {"type": int, "nargs": 2, "metavar": ("INDEX", "COUNT"), "required": True}),
        spec,
        threads,
        out,
    )
    command(
        "split",
        cmd_split,
        (["--clean"], {"required": True}),
        (["--name"], {"required": True}),
        spec,
        (["--decisions"], {"required": True}),
        (["--counts"], {"required": True}),
        (["--leaks"], {"required": True, "help": "near-duplicate pairs across train and held-out images"}),
        (["--max-distance"], {"type": int, "required": True, "help": "the near-duplicate distance (bits)"}),
        (["--benchmarks"], {"type": _spec, "default": {}, "help": "benchmark folders by name, as JSON"}),
        out,
    )
    command(
        "cache",
        cmd_cache,
        (["--split"], {"required": True}),
        (["--derived"], {"required": True}),
        (["--size"], {"type": int, "required": True}),
        (["--crops"], {"default": None, "help": "the detect stage's crops table: cut each photo to its fish"}),
        (["--crop-store"], {"default": None, "help": "the folder the crops table's paths are in"}),
        out,
    )
    found_on = [
        (["--clean"], {"required": True}),
        (["--derived"], {"required": True}),
        (["--records"], {"nargs": "+", "required": True}),
        (
            ["--datasets"],
            {
                "type": _spec,
                "required": True,
                "help": "every dataset's settings, as JSON: the held-out photos are "
                "those of the splits made from the clean table",
            },
        ),
        (["--synthetic-sources"], {"nargs": "*", "default": [], "help": "the sources whose boxes are known"}),
        (["--detector"], {"required": True}),
        threads,
    ]
    command("train-detector", cmd_train_detector, *found_on, spec, out)
    command(
        "fetch-detector",
        cmd_fetch_detector,
        (["--detector"], {"required": True}),
        spec,
        offline,
        (["--out"], {"required": True, "help": "the detector's folder (its meta.json)"}),
    )
    command(
        "detect",
        cmd_detect,
        *found_on,
        (["--folder"], {"required": True, "help": "the detector's folder (weights.pt, meta.json)"}),
        (["--threshold"], {"type": float, "required": True}),
        (["--padding"], {"type": float, "required": True}),
        (["--boxes"], {"required": True}),
        (["--crops"], {"required": True}),
        (["--queue"], {"required": True}),
        (["--quality"], {"required": True}),
        (["--crop-store"], {"required": True}),
        (["--sheet"], {"required": True, "help": "PNG: crops beside their photos"}),
        (["--found"], {"required": True, "help": "the boxes found before, per detector and photo (kept)"}),
    )
    outputs = [
        (["--weights"], {"required": True}),
        (["--history"], {"required": True}),
        (["--meta"], {"required": True}),
    ]
    command("pretrain", lambda a: _train(a, True), (["--cache"], {"required": True}), spec, threads, *outputs)
    command(
        "train",
        lambda a: _train(a, False),
        (["--cache"], {"required": True}),
        spec,
        (["--backbone"], {"default": None}),
        (["--backbone-spec"], {"type": _spec, "default": {}, "help": "the backbone's settings as JSON"}),
        (["--other-label"], {"default": "", "help": "the dataset's pooled 'other' label, if any"}),
        (["--offline"], {"action": "store_true", "help": "never download weights"}),
        threads,
        *outputs,
    )
    command(
        "imagenet-weights",
        cmd_imagenet_weights,
        (["--cache-dir"], {"required": True}),
        (["--offline"], {"action": "store_true"}),
    )
    command(
        "open-clip-weights",
        cmd_open_clip_weights,
        (["--model"], {"required": True, "help": "hf-hub:org/name"}),
        (["--cache-dir"], {"required": True}),
        (["--offline"], {"action": "store_true"}),
        out,
    )
    command(
        "evaluate",
        cmd_evaluate,
        spec,
        (["--name"], {"required": True}),
        (["--weights"], {"required": True}),
        (["--cache"], {"required": True}),
        (["--split"], {"required": True, "help": "the dataset's split table (each photo's sources)"}),
        (["--predictions"], {"required": True}),
        (["--metrics"], {"required": True}),
        (["--figure-data"], {"required": True}),
        (["--other-label"], {"default": "", "help": "the dataset's pooled 'other' label, if any"}),
        (["--history"], {"required": True, "help": "the training curves (for the figures)"}),
        (["--figures"], {"required": True, "help": "folder of the model's figures"}),
        (["--embedding-map"], {"required": True, "choices": ["tsne", "umap"], "help": "report.embedding_map"}),
        threads,
    )
    command("plot-dataset", cmd_plot_dataset, (["--name"], {"required": True}), (["--counts"], {"required": True}), out)
    command(
        "report",
        cmd_report,
        spec,
        (["--clean"], {"required": True}),
        (["--records"], {"nargs": "+", "required": True}),
        (["--downloads"], {"nargs": "+", "required": True}),
        (["--counts"], {"nargs": "+", "required": True}),
        (["--decisions"], {"nargs": "+", "default": [], "help": "the datasets' decisions tables (leaks)"}),
        (["--leaks"], {"nargs": "+", "default": [], "help": "the datasets' near-duplicate pairs across roles"}),
        (["--metrics"], {"nargs": "+", "required": True}),
        (["--figures"], {"required": True}),
        (["--citation"], {"help": "results/provenance/citation.md"}),
        (["--derived"], {"help": "results/provenance/derived_dataset.tsv"}),
        (["--label-issues"], {"help": "results/review/label_issues.json (the queue's summary)"}),
        (["--detect"], {"default": None, "help": "results/detect/quality.json, where there is a detect stage"}),
        (["--detect-sheet"], {"default": None, "help": "results/detect/crops.png"}),
        out,
    )
    command(
        "predict",
        cmd_predict,
        (["--model"], {"required": True, "help": "a model name from the configuration"}),
        (["folder"], {"help": "folder of photos (searched recursively)"}),
        (["--results"], {"default": "results", "help": "the pipeline's results folder"}),
        (["--out"], {"help": "CSV to write (default: standard output)"}),
    )
    command(
        "attribution",
        cmd_attribution,
        (["--records"], {"nargs": "+", "required": True}),
        (["--downloads"], {"nargs": "+", "required": True}),
        (["--clean"], {"required": True}),
        (["--splits"], {"nargs": "+", "required": True}),
        out,
    )
    command(
        "citation",
        cmd_citation,
        (["--spec"], {"type": _spec, "required": True, "help": "the configuration's sources as JSON"}),
        (["--records"], {"nargs": "+", "required": True}),
        (["--downloads"], {"nargs": "+", "required": True}),
        (["--splits"], {"nargs": "+", "required": True}),
        (["--derived"], {"required": True, "help": "derived_dataset.tsv: images per GBIF datasetKey"}),
        out,
    )
    root = (["--root"], {"default": ".", "help": "the project folder (default: here)"})
    command(
        "audit",
        cmd_audit,
        (["query"], {"help": "an image's SHA-256 (or its first 6+ hex digits), a model name or a species"}),
        root,
        (["--json"], {"action": "store_true", "help": "the chain as JSON"}),
    )
    command(
        "label-issues",
        cmd_label_issues,
        (["--clean"], {"required": True}),
        (["--derived"], {"required": True}),
        (["--spec"], {"type": _spec, "required": True, "help": "review.label_issues settings (resolved) as JSON"}),
        (["--backbone"], {"default": None, "help": "the backbone's weights file (spec backbone other than none)"}),
        (["--crops"], {"default": None, "help": "the detect stage's crops table (spec crops: true)"}),
        (["--crop-store"], {"default": None, "help": "the folder the crops table's paths are in"}),
        (["--seed"], {"type": int, "default": 0}),
        threads,
        out,
        (["--summary"], {"required": True, "help": "counts per issue type, clusters, the backbone used (JSON)"}),
    )
    command(
        "embedding-map",
        cmd_embedding_map,
        (["--predictions"], {"required": True}),
        (["--metrics"], {"required": True}),
        (["--figure-data"], {"required": True, "help": "the evaluation's figure_data.npz (its features)"}),
        (["--method"], {"required": True, "choices": ["tsne", "umap"], "help": "report.embedding_map"}),
        (["--seed"], {"type": int, "default": 0}),
        out,
    )
    command(
        "review",
        cmd_review,
        root,
        (["--host"], {"default": "127.0.0.1", "help": "another address than 127.0.0.1 requires a token"}),
        (["--port"], {"type": int, "default": 8765, "help": "0 picks a free port"}),
        (["--configfile"], {"nargs": "*", "default": [], "help": "as given to snakemake (default config/config.yaml)"}),
        (["--token"], {"default": None, "help": "access token (default: a random one when --host is given)"}),
    )
    remote = (["--remote"], {"default": None, "help": "a DVC remote URL or folder (default: snapshots.remote)"})
    config = (["--config"], {"default": "config/config.yaml", "help": "relative to --root"})
    command("snapshot", cmd_snapshot, root, remote, config)
    command("restore", cmd_restore, root, remote, config)
    command(
        "init",
        cmd_init,
        (["taxon"], {"help": "a genus, family or other taxon above species (Amphiprion, Pomacentridae)"}),
        (["--offline"], {"action": "store_true", "help": "ask GBIF nothing: say in comments what was not checked"}),
        (["--api"], {"default": None, "help": "a GBIF API mirror (default GBIF's own), written to the source"}),
        (["--download"], {"type": _spec, "default": {}, "help": "HTTP client settings as JSON, written to download:"}),
    )
    return p


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        # Messages name what to fix; a traceback would bury them.
        logging.error("%s", error)
        sys.exit(1)
