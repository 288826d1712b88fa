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
    from fishid import synthetic
    from fishid.tables import RECORD_COLUMNS, write_table

    if args.source != "synthetic":
        raise SystemExit(f"source {args.source!r} is not supported yet (known: synthetic)")
    spec = args.spec
    patterns = synthetic.load_patterns(spec["patterns"])
    records = synthetic.list_records(patterns, spec["counts"], args.seed, tuple(spec.get("size", (160, 120))))
    table = pd.DataFrame(records)
    table["listed_at"] = pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
    write_table(table, args.out, RECORD_COLUMNS)


def cmd_fetch(args):
    from fishid import fetch

    table = fetch.run(args.records, args.out, args.store)
    failed = table[table["error"] != ""]
    logging.info("%d stored, %d failed", len(table) - len(failed), len(failed))


def cmd_clean(args):
    from fishid import clean

    table = clean.run(
        args.records,
        args.downloads,
        args.exclusions,
        args.store,
        args.derived,
        args.out,
        args.min_side,
        args.max_side,
        args.threads,
    )
    logging.info("kept %d of %d images", (table["kept"]).sum(), len(table))


def cmd_split(args):
    from fishid import split

    table = split.run(args.clean, args.name, args.spec, args.out, args.decisions, args.counts)
    logging.info("%s: %s", args.name, table.groupby(["label", "split"]).size().to_dict())


def cmd_cache(args):
    from fishid import imagecache

    imagecache.save(imagecache.build(args.split, args.derived, args.size), args.out)


def _train(args, pretrain: bool):
    import torch

    from fishid import imagecache, train

    torch.set_num_threads(args.threads)
    cache = imagecache.load(args.cache)
    if pretrain:
        result = train.pretrain_backbone(args.spec, cache)
    else:
        result = train.train_model(args.spec, cache, args.backbone)
    train.save(*result, args.weights, args.history, args.meta)


def cmd_imagenet_weights(args):
    from fishid import weights

    path = weights.ensure_imagenet_weights(args.cache_dir, allow_download=not args.offline)
    logging.info("verified %s", path)


def cmd_evaluate(args):
    import torch

    from fishid import evaluate

    torch.set_num_threads(args.threads)
    result = evaluate.run(
        args.spec,
        args.name,
        args.weights,
        args.cache,
        args.other_label,
        args.predictions,
        args.metrics,
        args.figure_data,
    )
    logging.info("%s accuracy on %s: %.3f", args.name, result["evaluated_on"], result["accuracy"])


def cmd_plot_model(args):
    import numpy as np

    from fishid import figures

    history = pd.read_csv(args.history)
    metrics = json.loads(Path(args.metrics).read_text())
    data = np.load(args.figure_data)
    out = Path(args.out_dir)
    figures.save(figures.curves(history, args.name), out / "curves.png")
    figures.save(figures.confusion_heatmap(metrics["confusion"], metrics["classes"], args.name), out / "confusion.png")
    figures.save(figures.per_species_bars(metrics, args.name), out / "per_species.png")
    figures.save(figures.reliability_diagram(metrics, args.name), out / "reliability.png")
    figures.save(figures.threshold_curves(metrics, args.name), out / "thresholds.png")
    figures.save(figures.saliency_grid(data, args.name), out / "saliency.png")
    figures.save(figures.misclassified_grid(data, args.name), out / "misclassified.png")
    figures.save(figures.embedding_map(data, args.name), out / "embeddings.png")


def cmd_plot_dataset(args):
    from fishid import figures

    counts = pd.read_csv(args.counts, sep="\t")
    figures.save(figures.dataset_table(counts, args.name), args.out)


def cmd_report(args):
    from fishid import report

    model_dirs = [Path(p).parent for p in args.metrics]
    report.build(args.spec, args.records, args.downloads, args.clean, args.counts, model_dirs, args.figures, args.out)


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
    command("list", cmd_list, (["source"], {}), spec, (["--seed"], {"type": int, "default": 0}), out)
    command("fetch", cmd_fetch, (["--records"], {"required": True}), (["--store"], {"required": True}), out)
    command(
        "clean",
        cmd_clean,
        (["--records"], {"nargs": "+", "required": True}),
        (["--downloads"], {"nargs": "+", "required": True}),
        (["--exclusions"], {"required": True}),
        (["--store"], {"required": True}),
        (["--derived"], {"required": True}),
        (["--min-side"], {"type": int, "required": True}),
        (["--max-side"], {"type": int, "required": True}),
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
        out,
    )
    command(
        "cache",
        cmd_cache,
        (["--split"], {"required": True}),
        (["--derived"], {"required": True}),
        (["--size"], {"type": int, "required": True}),
        out,
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
        "evaluate",
        cmd_evaluate,
        spec,
        (["--name"], {"required": True}),
        (["--weights"], {"required": True}),
        (["--cache"], {"required": True}),
        (["--predictions"], {"required": True}),
        (["--metrics"], {"required": True}),
        (["--figure-data"], {"required": True}),
        (["--other-label"], {"default": "", "help": "the dataset's pooled 'other' label, if any"}),
        threads,
    )
    command(
        "plot-model",
        cmd_plot_model,
        (["--name"], {"required": True}),
        (["--history"], {"required": True}),
        (["--metrics"], {"required": True}),
        (["--figure-data"], {"required": True}),
        (["--out-dir"], {"required": True}),
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
        (["--metrics"], {"nargs": "+", "required": True}),
        (["--figures"], {"required": True}),
        out,
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
