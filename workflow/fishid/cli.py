"""`fishid` command line: the commands people type (audit, review, snapshot, restore, init),
and every pipeline step (`fishid STEP`, as the rules run it), whose subcommands and calls
follow from its declaration (`@steps.declare` on its entry function, read by fishid.steps).

The rules run their steps through workflow/fishid_step.py, not this module: editing a command
here reruns no step.
"""

import argparse
import json
import sys
from pathlib import Path

from fishid import steps


def cmd_audit(args):
    from fishid.report import audit

    prov = audit.load(args.root)
    if args.json:
        kind, chain = audit.audit(prov, args.query)
        print(json.dumps({"kind": kind, **chain}, indent=2, default=str))
    else:
        print(audit.report(prov, args.query))


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
    steps.add_subcommands(sub)

    def command(name, func, *arguments):
        s = sub.add_parser(name)
        s.set_defaults(func=func)
        for flags, kwargs in arguments:
            s.add_argument(*flags, **kwargs)
        return s

    download = (
        ["--download"],
        {"type": json.loads, "default": {}, "help": "HTTP client settings as JSON, written to download:"},
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
        download,
    )
    return p


def main(argv=None):
    steps.run(parser(), argv)
