"""The review app (Flask): pages over the run's tables, and the two decisions it may write
(and undo, while cleaning has not applied them yet).

Reads results/ and resources/ only; writes config/exclusions.tsv and config/relabels.tsv
(fishid.review.decisions). Every page is a Jinja2 template with autoescaping: fields from
sources (rights holders, titles) are shown as text, whatever they hold.
"""

import hmac
import io
import re
import secrets
import time
import uuid
from pathlib import Path

import yaml
from flask import Flask, abort, redirect, render_template, request, send_file, url_for

from fishid import config as configuration
from fishid.clean.stage import NOT_A_FISH
from fishid.report import audit
from fishid.report.attribution import neutralise
from fishid.review import decisions, embedding_map, files, plan, planner, uploads, views
from fishid.tables import table_text

TOKEN_COOKIE = "fishid_review_token"
MAX_REQUEST_BYTES = 200 * 1024 * 1024
# Host headers are checked so that a web page whose name an attacker rebinds to 127.0.0.1
# (DNS rebinding) is refused: its requests carry its own name. A name alone allows any port;
# `fishid review` allows only its own address and port (fishid.review.server.allowed_hosts).
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
QUEUE_SCOPES = ("flagged", "all")
HOST_HEADER = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::[0-9]{1,5})?")
# How long a page waits for a plan being made before it says so instead (a page should answer
# within 2 s; a small project's dry run may be done by then).
PLAN_WAIT = 1.0


def read_config(root, configfiles=()) -> dict:
    """The configuration as Snakemake would read it: the given files merged in order, else
    config/config.yaml."""
    paths = [Path(root, p) for p in configfiles] or [Path(root, "config/config.yaml")]
    config = {}
    for path in paths:
        config = _merged(config, yaml.safe_load(path.read_text()) or {})
    return config


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def host_allowed(header: str, hosts: tuple[str, ...]) -> bool:
    """Whether a Host header is one of `hosts` (host:port, or a name at any port)."""
    header = header.lower()
    match = HOST_HEADER.fullmatch(header)
    return bool(match) and (header in hosts or match["name"] in hosts)


def create_app(
    root,
    configfiles=(),
    access_token: str | None = None,
    max_file_bytes: int = uploads.MAX_FILE_BYTES,
    hosts: tuple[str, ...] | None = LOOPBACK,
    plan_wait: float = PLAN_WAIT,
):
    """`hosts`: the Host headers answered (host_allowed), None for any; `plan_wait`: the
    seconds a page waits for a plan being made."""
    root = Path(root).resolve()
    app = Flask(__name__)
    app.config.update(
        ROOT=root,
        CONFIGFILES=list(configfiles),
        ACCESS_TOKEN=access_token,
        CSRF_TOKEN=secrets.token_urlsafe(24),
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        MAX_FILE_BYTES=max_file_bytes,
        HOSTS=hosts,
        PLAN_WAIT=plan_wait,
    )
    app.jinja_env.filters["score"] = views.score_text
    results = {}  # the Predict page's tables by id, for their CSV and JSON export

    def config() -> dict:
        return configuration.with_schema_defaults(read_config(root, app.config["CONFIGFILES"]))

    def decision_paths() -> tuple[Path, Path]:
        """Where decisions go; ConfigError (a ValueError) for a relative path that leads out of the project."""
        tables = configuration.user_tables(config())
        return tuple(
            configuration.project_path(root, tables[key], key) for key in ("clean.exclusions", "clean.relabels")
        )

    def predict_roots() -> list[str]:
        return config()["review"]["predict_roots"]

    cache = views.Cache()

    def provenance():
        """The run's tables (audit.load), read again only when one of them changed."""
        files = audit.input_files(root)
        return cache.get("provenance", audit.signature(files), lambda: audit.load(root, files))

    def images(prov):
        """views.images of `prov`, made once per reading of the tables (the entry holds `prov`,
        so no other table can take its id while it is kept)."""
        return cache.get("images", id(prov), lambda: (prov, views.images(prov)))[1]

    def label_issues():
        path = root / views.LABEL_ISSUES
        return cache.get("label_issues", audit.signature({"": [path]}), lambda: views.label_issues(root))

    def plan_signature():
        try:
            read = read_config(root, app.config["CONFIGFILES"])
        except (OSError, ValueError, AttributeError, yaml.YAMLError):
            read = None  # the dry run says what is wrong with it; the files are signed still
        return audit.signature(planner.inputs(root, app.config["CONFIGFILES"], read))

    # plan.planned looked up at each call: tests replace it.
    plans = planner.Planner(plan_signature, lambda: plan.planned(root, app.config["CONFIGFILES"], config()))

    def current_plan() -> dict:
        """The plan of the files as they are now ("plan": None while it is made) and the time
        of the state it describes."""
        made = plans.get(app.config["PLAN_WAIT"])
        if made is None:
            return {"plan": None, "as_of": ""}
        return {"plan": made[0], "as_of": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(made[1]))}

    @app.before_request
    def check_request():
        # First, so that a page under a foreign name never sees a page, nor the CSRF token in it.
        hosts = app.config["HOSTS"]
        if hosts is not None and not host_allowed(request.headers.get("Host", ""), hosts):
            abort(400, f"this server answers to {', '.join(hosts)} only: open it at the address it printed")
        wanted = app.config["ACCESS_TOKEN"]
        if wanted:
            given = request.args.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
            if not hmac.compare_digest(given.encode(), wanted.encode()):
                abort(403, "this server needs its access token (the URL `fishid review` printed)")
        if request.method == "POST":
            given = request.form.get("csrf", "")
            if not hmac.compare_digest(given.encode(), app.config["CSRF_TOKEN"].encode()):
                abort(403, "missing or wrong CSRF token: reload the page and try again")

    @app.after_request
    def headers(response):
        # Scripts only from this app's own file; no frames, no sniffing of served files.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        token = app.config["ACCESS_TOKEN"]
        if token and request.args.get("token") == token:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(409)
    @app.errorhandler(413)
    def error(e):
        return render_template("error.html", code=e.code, message=e.description), e.code

    @app.context_processor
    def common():
        return {"csrf": app.config["CSRF_TOKEN"], "NOT_A_FISH": NOT_A_FISH}

    def shown_path(path) -> str:
        path = Path(path)
        return str(path.relative_to(root) if path.is_relative_to(root) else path)

    def pending_decisions(prov) -> list[dict]:
        exclusions, relabels = decision_paths()
        return [{**d, "file": shown_path(d["file"])} for d in decisions.pending(exclusions, relabels, prov.clean)]

    def dataset_view():
        """(the images table, the filters asked for, the rows they match)."""
        prov = provenance()
        table = images(prov)
        query = {k: request.args.get(k, "") for k in views.FILTERS}
        return prov, table, query, views.filtered(table, query)

    @app.get("/")
    def dataset():
        prov, table, query, chosen = dataset_view()
        rows, page, pages = views.page_of(chosen, request.args.get("page", 1, type=int))
        filters = {k: v for k, v in query.items() if v}
        return render_template(
            "dataset.html",
            choices=views.filter_choices(table, prov),
            query=query,
            filters=filters,
            groups=views.grouped(rows),
            matching=len(chosen),
            total=len(table),
            page=page,
            pages=pages,
            first=(page - 1) * views.PAGE_SIZE + 1 if len(rows) else 0,
            last=(page - 1) * views.PAGE_SIZE + len(rows),
        )

    @app.get("/export.<kind>")
    def dataset_export(kind):
        if kind not in ("csv", "json"):
            abort(404, "export as .csv or .json")
        prov, _, _, chosen = dataset_view()
        try:
            found = pending_decisions(prov)
        except ValueError as problem:
            abort(400, str(problem))
        table = views.export_table(chosen, found)
        if kind == "csv":
            # Rights holders, titles and reasons come from sources and users: shown, never run.
            data = table_text(table.map(neutralise), sep=",").encode()
            mimetype = "text/csv"
        else:
            data = table.to_json(orient="records", indent=2).encode()
            mimetype = "application/json"
        return send_file(io.BytesIO(data), mimetype=mimetype, as_attachment=True, download_name=f"dataset.{kind}")

    @app.get("/image/<sha256>")
    def image(sha256):
        prov = provenance()
        try:
            kind, chain = audit.audit(prov, sha256)
        except ValueError as problem:
            abort(404, str(problem))
        if kind != "image":
            abort(404, f"{sha256} is not an image")
        table = images(prov)
        row = table[table["sha256"] == chain["sha256"]].to_dict("records")
        row = row[0] if row else {}
        issue = views.issue_of(label_issues(), chain["sha256"])
        try:
            found = decisions.pending_of(pending_decisions(prov), chain["sha256"])
        except ValueError as problem:
            abort(400, str(problem))
        return render_template(
            "image.html",
            chain=chain,
            row=row,
            issue=issue,
            pending=found,
            default_label=views.relabel_default(issue, row),
            text=audit.format_image(chain),
            species=views.species_of_config(config(), table),
        )

    @app.post("/decide")
    def decide():
        sha256 = request.form.get("sha256", "")
        prov = provenance()
        if sha256 not in set(prov.clean["sha256"]):
            abort(400, "no such image in results/clean/images.tsv")
        action = request.form.get("action")
        if action not in ("exclude", "relabel"):
            abort(400, "action must be exclude or relabel")
        try:
            exclusions, relabels = decision_paths()
            species = views.species_of_config(config(), images(prov)) if action == "relabel" else ()
            written = decisions.decide(
                exclusions,
                relabels,
                sha256,
                action,
                request.form.get("reason", ""),
                request.form.get("label", ""),
                species,
            )
        except ValueError as problem:
            # A contradicting decision is a conflict with the files' state, not a malformed request.
            abort(409 if isinstance(problem, decisions.Conflict) else 400, str(problem))
        if request.form.get("queue") in QUEUE_SCOPES:
            # Working through the queue: on to the next photo, the plan made meanwhile for the Plan page.
            plans.request()
            at = request.form.get("at", 0, type=int) + 1
            return redirect(url_for("queue", scope=request.form["queue"], at=at, decided=sha256), code=303)
        return render_template(
            "decided.html", sha256=sha256, action=action, written=shown_path(written), **current_plan()
        )

    @app.get("/queue")
    def queue():
        prov = provenance()
        scope = request.args.get("scope", "flagged")
        if scope not in QUEUE_SCOPES:
            abort(400, f"scope must be one of {', '.join(QUEUE_SCOPES)}")
        table = images(prov)
        issues = label_issues()
        items = views.queue_items(table, issues, scope)
        at = min(max(request.args.get("at", 0, type=int), 0), max(len(items) - 1, 0))
        item = views.queue_item(table, items, at)
        try:
            found = pending_decisions(prov)
        except ValueError as problem:
            abort(400, str(problem))
        decided = request.args.get("decided", "")
        return render_template(
            "queue.html",
            scope=scope,
            count=len(items),
            at=at,
            item=item,
            pending=decisions.pending_of(found, item["sha256"]) if item else None,
            last=decisions.pending_of(found, decided) if decided else None,
            default_label=views.relabel_default(item, item) if item else "",
            species=views.species_of_config(config(), table),
            summary=views.issue_summary(root),
            ranked=len(issues),
        )

    @app.get("/pending")
    def pending():
        prov = provenance()
        try:
            found = pending_decisions(prov)
        except ValueError as problem:
            abort(400, str(problem))
        urls = dict(zip(prov.clean["sha256"], images(prov)["url"])) if len(prov.clean) else {}
        for decision in found:
            decision["url"] = urls.get(decision["id"], "")
        return render_template("pending.html", pending=found)

    @app.post("/undo")
    def undo():
        kind = request.form.get("kind", "")
        if kind not in decisions.KINDS:
            abort(400, "kind must be exclude or relabel")
        try:
            exclusions, relabels = decision_paths()
            decisions.undo(exclusions if kind == "exclude" else relabels, request.form.get("sha256", ""))
        except ValueError as problem:
            abort(400, str(problem))
        plans.request()
        return redirect(url_for("pending"), code=303)

    @app.get("/plan")
    def plan_page():
        return render_template("plan.html", **current_plan())

    @app.get("/queues")
    def queues():
        prov = provenance()
        return render_template(
            "queues.html",
            queues=views.queues(images(prov), label_issues()),
            summary=views.issue_summary(root),
        )

    @app.get("/models")
    def models():
        prov = provenance()
        return render_template("models.html", models=prov.models)

    @app.get("/models/<name>")
    def model(name):
        prov = provenance()
        if name not in prov.models:
            abort(404, f"no model {name} under results/models")
        table = images(prov)
        mistakes, page, pages, total = views.model_mistakes(prov, name, table, request.args.get("page", 1, type=int))
        return render_template(
            "model.html",
            name=name,
            metrics=prov.models[name].get("metrics", {}),
            mistakes=mistakes,
            page=page,
            pages=pages,
            total=total,
            first=(page - 1) * views.PAGE_SIZE + 1 if mistakes else 0,
            map=views.embedding_map_of(root, name),
            map_file=embedding_map.path_of(name),
        )

    def predictable_models() -> list[str]:
        folder = root / "results/models"
        return sorted(p.parent.name for p in folder.glob("*/weights.pt") if (p.parent / "meta.json").exists())

    @app.get("/predict")
    def predict_page():
        return render_template("predict.html", models=predictable_models(), table=None, problems=[])

    @app.post("/predict")
    def predict_run():
        name = request.form.get("model", "")
        if name not in predictable_models():
            abort(400, f"no trained model {name!r}")
        model_dir = root / "results/models" / name
        sent = [(f.filename or "upload", f.read()) for f in request.files.getlist("photos") if f.filename]
        folder = request.form.get("folder", "").strip()
        problems = uploads.refusals(sent, app.config["MAX_FILE_BYTES"])
        if not sent and not folder:
            problems.append("choose photos to upload or give a folder")
        if folder and not sent:
            try:
                folder = files.predict_folder(root, folder, predict_roots())
            except ValueError as problem:
                problems.append(str(problem))
        if problems:
            page = render_template("predict.html", models=predictable_models(), table=None, problems=problems)
            return page, 400
        try:
            table = uploads.predict_uploads(model_dir, sent) if sent else uploads.predict_path(model_dir, folder)
        except FileNotFoundError as problem:
            page = render_template("predict.html", models=predictable_models(), table=None, problems=[str(problem)])
            return page, 400
        key = uuid.uuid4().hex
        results[key] = table
        return render_template(
            "predict.html",
            models=predictable_models(),
            table=table.to_dict("records"),
            columns=list(table.columns),
            key=key,
            model=name,
            problems=[],
        )

    @app.get("/predict/<key>.<kind>")
    def predict_export(key, kind):
        if key not in results or kind not in ("csv", "json"):
            abort(404, "no such result (they last as long as the server)")
        table = results[key]
        if kind == "csv":
            # File names come from the client: a spreadsheet must show them, not run them.
            data = table_text(table.map(neutralise), sep=",", float_format="%.6f").encode()
            mimetype = "text/csv"
        else:
            data = table.to_json(orient="records", indent=2).encode()
            mimetype = "application/json"
        return send_file(io.BytesIO(data), mimetype=mimetype, as_attachment=True, download_name=f"predictions.{kind}")

    @app.get("/file/<area>/<path:relative>")
    def file(area, relative):
        target = files.served_file(root, area, relative)
        if target is None:
            abort(404, "not an image of the store or the results folder")
        return send_file(target)

    @app.get("/go")
    def go():
        return redirect(url_for("image", sha256=request.args.get("q", "").strip()))

    return app
