"""Load and validate the configuration; resolve each model's full settings."""

import copy
import functools
from pathlib import Path

import jsonschema
import yaml

from fishid import licences, variants

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


def kind_of(name: str, spec: dict) -> str:
    """A source's kind: its `kind` key, or its name (a source named gbif is of kind gbif)."""
    return spec.get("kind", name)


def synthetic_sources(sources: dict) -> list[str]:
    """The sources of kind synthetic: the photos whose fish boxes are known."""
    return [name for name, spec in sources.items() if kind_of(name, spec) == "synthetic"]


class ConfigError(ValueError):
    pass


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _message(error: jsonschema.ValidationError, schema: dict) -> str:
    if error.validator == "unevaluatedProperties":
        # jsonschema also lists known keys whose values failed; name only the unknown ones.
        known = set(error.schema.get("properties", {})) | set(schema["$defs"]["training"]["properties"])
        unknown = sorted(set(error.instance) - known)
        if not unknown:
            return ""
        return f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
    return error.message


def load_schema() -> dict:
    """config/schema.yaml, read once per process (a fresh copy each call: callers may change it)."""
    return copy.deepcopy(_schema())


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def with_schema_defaults(config: dict) -> dict:
    """A copy of `config` with every `default:` of config/schema.yaml filled in: the one place a key
    left out gets its value, for the Snakefile, the CLI and the review app alike. A default fills a
    key of an object the configuration has (a map's entries included: each dataset), or of one
    whose own default (an object) filled it; each source gets its kind's defaults, and
    training_defaults the training settings' ($defs/training)."""
    filled = _filled(copy.deepcopy(config), _schema())
    for name, spec in filled.get("sources", {}).items():
        _filled(spec, _schema()["$defs"].get(f"source_{kind_of(name, spec)}", {}))
    # Under training_defaults alone: filled into a model's or a backbone's entry, a default
    # would override the user's training_defaults (model_settings puts the entry on top).
    if "training_defaults" in filled:
        _filled(filled["training_defaults"], _schema()["$defs"]["training"])
    return filled


def with_training_defaults(settings: dict) -> dict:
    """A model's (or backbone's) settings over the training settings' defaults: for a step handed
    settings that may leave them out (a test, a bench script, a weights file's spec). Settings from
    a filled configuration already hold them; the defaults come first, in the schema's order, as
    they always have in meta.json."""
    return {**training_defaults(), **settings}


def training_defaults() -> dict:
    """The `default:` of each training setting that has one (config/schema.yaml's $defs/training)."""
    return _filled({}, _schema()["$defs"]["training"])


def section_with_defaults(settings: dict, *keys: str) -> dict:
    """A copy of `settings`, the section of a configuration at `keys` (("detect", "training")), with
    the schema's defaults of that section filled in as with_schema_defaults fills them: for a step
    handed one section alone (by its CLI command, or a test), which may leave keys out."""
    node = _schema()
    for key in keys:
        node = node["properties"][key]
    return _filled(copy.deepcopy(settings), node)


def _filled(value, node: dict):
    if not isinstance(value, dict):
        return value
    for key, spec in node.get("properties", {}).items():
        if key not in value and "default" in spec:
            value[key] = copy.deepcopy(spec["default"])
        if key in value:
            value[key] = _filled(value[key], spec)
    if isinstance(entry := node.get("additionalProperties"), dict):
        for key in [k for k in value if k not in node.get("properties", {})]:
            value[key] = _filled(value[key], entry)
    return value


def default(*keys: str, definition: str | None = None):
    """The default of a key (`default("clean", "relabels")`), written in config/schema.yaml only;
    "*" stands for any entry of a map (`default("datasets", "*", "test_fraction")`), and
    `definition` starts at one of the schema's $defs (`default("api", definition="source_gbif")`)."""
    node = _schema()["$defs"][definition] if definition else _schema()
    for key in keys:
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    return copy.deepcopy(node["default"])


def validate(config: dict, source="config", root=".") -> dict:
    """Raise ConfigError naming every bad key; return the config unchanged if it is good.
    `root` is the project folder the config's relative paths are read from (Snakemake's
    working directory)."""
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    problems = [f"  {_key_path(e)}: {m}" for e in errors if (m := _message(e, schema))]
    if not problems:
        problems = [f"  {p}" for p in _cross_references(config, Path(root))]
    if problems:
        raise ConfigError(f"{source} has {len(problems)} problem(s):\n" + "\n".join(problems))
    return config


RANGE_KEYS = ("crop_scale",)  # training settings that are a [low, high] range


def _from_folder(spec: dict) -> bool:
    """open_clip reads a local-dir: or hf-hub: model's weights from its folder, not `pretrained`."""
    return spec.get("model", "").startswith(("local-dir:", "hf-hub:"))


def _reversed_ranges(config: dict) -> list[str]:
    """Range settings ([low, high]) given high first, wherever training settings are set."""
    places = [("training_defaults", config.get("training_defaults", {}))]
    places += [(f"models.{n}", spec) for n, spec in config.get("models", {}).items()]
    places += [(f"backbones.{n}", spec) for n, spec in config.get("backbones", {}).items()]
    problems = []
    for where, spec in places:
        for key in RANGE_KEYS:
            low_high = spec.get(key)
            if isinstance(low_high, list) and len(low_high) == 2 and low_high[0] > low_high[1]:
                problems.append(f"{where}.{key}: {low_high} is reversed; write the lower bound first")
    return problems


def explicit_species(spec: dict) -> list[str] | None:
    """The species a dataset (or its `other` pool) names one by one; None where a rule
    (`within`) or the run chooses them: then only the split table knows its classes."""
    species = spec.get("species")
    return species if isinstance(species, list) else None


def _other_pools(datasets: dict) -> list[str]:
    """A dataset's "other" pool must be neither named like one of its species nor hold one;
    with a rule, the split stage checks the species it chose."""
    problems = []
    for name, spec in datasets.items():
        other = spec.get("other")
        if not other:
            continue
        if "species" in other and "within" in other:
            problems.append(f"datasets.{name}.other: give either species (a list) or within (a taxon), not both")
        species = set(explicit_species(spec) or [])
        if other["label"] in species:
            problems.append(
                f"datasets.{name}.other.label: {other['label']!r} is one of the dataset's species; "
                "the other pool would merge into it (name it, for example, 'other')"
            )
        both = sorted(species & set(explicit_species(other) or []))
        if both:
            problems.append(
                f"datasets.{name}.other.species: {', '.join(both)} also in datasets.{name}.species; "
                "a species is either a class or part of the other pool"
            )
    return problems


def _licence_ids(config: dict) -> list[str]:
    problems = []
    for n, entry in enumerate(config.get("licences", {}).get("allow", [])):
        if problem := licences.unknown_id(entry):
            problems.append(f"licences.allow.{n}: {problem}")
    for name, spec in config.get("sources", {}).items():
        if spec.get("licence") and (problem := licences.unknown_id(spec["licence"])):
            problems.append(f"sources.{name}.licence: {problem}")
    return problems


def _test_sources(config: dict) -> list[str]:
    problems = []
    for name, spec in config["datasets"].items():
        if not spec.get("test_sources"):
            continue
        key = f"datasets.{name}.test_sources"
        unknown = sorted(set(spec["test_sources"]) - set(config["sources"]))
        if unknown:
            problems.append(f"{key}: {', '.join(unknown)} is not one of the sources {sorted(config['sources'])}")
        if not spec.get("test_fraction"):
            problems.append(f"{key}: needs a test_fraction above 0 (the share of the held-out photos that is test)")
        if spec.get("use_source_split"):
            problems.append(f"{key}: cannot be combined with use_source_split (each says where the test photos are)")
    return problems


def _fractions(datasets: dict) -> list[str]:
    """Validation and test together must leave images to train on."""
    problems = []
    for name, spec in datasets.items():
        # A dataset whose photos all came with a role (use_source_split) may leave it out.
        val, test = spec.get("val_fraction", 0), spec.get("test_fraction", 0)
        if test and val + test >= 1:
            problems.append(
                f"datasets.{name}.val_fraction + test_fraction: {val} + {test} = {val + test:g} leaves no image "
                "to train on; keep their sum below 1"
            )
        elif val >= 1:
            problems.append(f"datasets.{name}.val_fraction: {val} leaves no image to train on; keep it below 1")
    return problems


def _listed_taxa(name: str, spec: dict) -> set[str] | None:
    """The taxa a source lists where its entry alone says which (synthetic counts, FishBase
    species); None where only listing tells (folders, GBIF names and genera, which map
    synonyms to accepted names, FishBase genera, FishPix)."""
    kind = kind_of(name, spec)
    if kind == "synthetic":
        return set(spec["counts"])
    if kind == "fishbase" and "genera" not in spec:
        return set(spec["species"])
    return None


def _unlisted_species(config: dict) -> list[str]:
    """Dataset species no source lists, where every source's taxa are known from the config;
    otherwise the split stage names a species with no kept image when it runs."""
    listed = set()
    for name, spec in config["sources"].items():
        taxa = _listed_taxa(name, spec)
        if taxa is None:
            return []
        listed |= taxa
    problems = []
    for name, spec in config["datasets"].items():
        for key, part in (("species", spec), ("other.species", spec.get("other", {}))):
            if missing := [s for s in explicit_species(part) or [] if s not in listed]:
                problems.append(
                    f"datasets.{name}.{key}: {', '.join(missing)} listed by no source (the sources list "
                    f"{', '.join(sorted(listed))}); add it to a source or remove it from the dataset"
                )
    return problems


def _self_controls(models: dict) -> list[str]:
    return [
        f"models.{name}.control_of: {name!r} is the model itself; name the model this one is a control for"
        for name, spec in models.items()
        if spec.get("control_of") == name
    ]


def user_tables(config: dict) -> dict[str, str]:
    """The tables the user keeps, by key: the run reads them, the review app writes the clean ones."""
    clean = config.get("clean", {})
    tables = {
        "clean.exclusions": clean.get("exclusions"),
        "clean.relabels": clean.get("relabels", default("clean", "relabels")),
    }
    for name, spec in config.get("sources", {}).items():
        if kind_of(name, spec) == "synthetic":
            tables[f"sources.{name}.patterns"] = spec.get("patterns")
    return {key: path for key, path in tables.items() if path}


def project_path(root, path: str, key: str) -> Path:
    """`path` of config key `key`, read from the project folder `root`. A relative path must
    stay inside it once ../ and symbolic links are followed (a config copied from elsewhere
    cannot point the run, or the review app's writes, at another file); an absolute one is
    the user's explicit choice and is taken as it is."""
    root = Path(root).resolve()
    if Path(path).is_absolute():
        return Path(path)
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise ConfigError(
            f"{key}: {path!r} leads outside the project folder {root} (to {target}); give a path inside it, "
            "or an absolute path to use a file elsewhere on purpose"
        )
    return target


def _user_table_paths(config: dict, root: Path) -> list[str]:
    problems = []
    for key, path in user_tables(config).items():
        try:
            found = project_path(root, path, key)
        except ConfigError as error:
            problems.append(str(error))
            continue
        if not found.is_file():
            problems.append(f"{key}: {path!r} is not a file ({found})")
    return problems


def _cross_references(config: dict, root: Path) -> list[str]:
    datasets, backbones = config["datasets"], config.get("backbones", {})
    problems = _reversed_ranges(config) + _other_pools(datasets) + _licence_ids(config) + _test_sources(config)
    problems += _fractions(datasets) + _unlisted_species(config) + _self_controls(config["models"])
    problems += _user_table_paths(config, root)
    for name, spec in backbones.items():
        if spec["source"] in ("pretrain", "clip_pretrain") and spec.get("dataset") not in datasets:
            problems.append(f"backbones.{name}.dataset: {spec.get('dataset')!r} is not a dataset in datasets")
        for key, source in (("clip", "clip_pretrain"), ("model", "open_clip"), ("pretrained", "open_clip")):
            if spec["source"] == source and key not in spec and not (key == "pretrained" and _from_folder(spec)):
                problems.append(f"backbones.{name}: source {source} needs `{key}`")
    for name, model in config["models"].items():
        if model["dataset"] not in datasets:
            problems.append(f"models.{name}.dataset: {model['dataset']!r} is not one of {sorted(datasets)}")
        backbone, kind = model.get("backbone"), variants.needs(model["arch"]).backbone
        fitting = sorted(b for b, spec in backbones.items() if variants.BACKBONE_KINDS[spec["source"]] == kind)
        if kind == "clip" and backbone not in fitting:
            problems.append(f"models.{name}.backbone: {backbone!r} is not one of the CLIP backbones {fitting}")
        elif kind == "resnet18" and backbone != "random" and backbone not in fitting:
            problems.append(f"models.{name}.backbone: {backbone!r} is neither 'random' nor one of {fitting}")
        if model.get("control_of") and model["control_of"] not in config["models"]:
            problems.append(f"models.{name}.control_of: {model['control_of']!r} is not a model")
        if "crop" in model and model["crop"] != (detect_settings(config) or {}).get("detector"):
            problems.append(f"models.{name}.crop: {model['crop']!r} is not the configured detector (detect.detector)")
    return problems


def detect_settings(config: dict) -> dict | None:
    """The detect section with the schema's defaults filled in; None where there is none."""
    return with_schema_defaults(config).get("detect")


def model_settings(config: dict, name: str) -> dict:
    """The training defaults overridden by the model's own keys: everything its rule needs."""
    return {**config["training_defaults"], **config["models"][name]}


def backbone_settings(config: dict, name: str) -> dict:
    """Like model_settings; the description is left out so that rewording it retrains nothing."""
    spec = {k: v for k, v in config["backbones"][name].items() if k != "description"}
    return {**config["training_defaults"], **spec}


def load(path) -> dict:
    return validate(yaml.safe_load(Path(path).read_text()), source=str(path))
