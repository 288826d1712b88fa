"""Load and validate the configuration; resolve each model's full settings."""

from pathlib import Path

import jsonschema
import yaml

from fishid import licences

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


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


def validate(config: dict, source="config") -> dict:
    """Raise ConfigError naming every bad key; return the config unchanged if it is good."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    problems = [f"  {_key_path(e)}: {m}" for e in errors if (m := _message(e, schema))]
    if not problems:
        problems = [f"  {p}" for p in _cross_references(config)]
    if problems:
        raise ConfigError(f"{source} has {len(problems)} problem(s):\n" + "\n".join(problems))
    return config


CLIP_SOURCES = ("clip_pretrain", "open_clip")
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


def _other_pools(datasets: dict) -> list[str]:
    """A dataset's "other" pool must be neither named like one of its species nor hold one."""
    problems = []
    for name, spec in datasets.items():
        other = spec.get("other")
        if not other:
            continue
        species = set(spec["species"])
        if other["label"] in species:
            problems.append(
                f"datasets.{name}.other.label: {other['label']!r} is one of the dataset's species; "
                "the other pool would merge into it (name it, for example, 'other')"
            )
        both = sorted(species & set(other.get("species", [])))
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


def _cross_references(config: dict) -> list[str]:
    datasets, backbones = config["datasets"], config.get("backbones", {})
    problems = _reversed_ranges(config) + _other_pools(datasets) + _licence_ids(config)
    for name, spec in backbones.items():
        if spec["source"] in ("pretrain", "clip_pretrain") and spec.get("dataset") not in datasets:
            problems.append(f"backbones.{name}.dataset: {spec.get('dataset')!r} is not a dataset in datasets")
        for key, source in (("clip", "clip_pretrain"), ("model", "open_clip"), ("pretrained", "open_clip")):
            if spec["source"] == source and key not in spec and not (key == "pretrained" and _from_folder(spec)):
                problems.append(f"backbones.{name}: source {source} needs `{key}`")
    for name, model in config["models"].items():
        if model["dataset"] not in datasets:
            problems.append(f"models.{name}.dataset: {model['dataset']!r} is not one of {sorted(datasets)}")
        backbone = model.get("backbone")
        if model["arch"].startswith("clip_"):
            clips = sorted(b for b, spec in backbones.items() if spec["source"] in CLIP_SOURCES)
            if backbone not in clips:
                problems.append(f"models.{name}.backbone: {backbone!r} is not one of the CLIP backbones {clips}")
        elif model["arch"] != "ri":
            resnets = sorted(b for b, spec in backbones.items() if spec["source"] not in CLIP_SOURCES)
            if backbone != "random" and backbone not in resnets:
                problems.append(f"models.{name}.backbone: {backbone!r} is neither 'random' nor one of {resnets}")
        if model.get("control_of") and model["control_of"] not in config["models"]:
            problems.append(f"models.{name}.control_of: {model['control_of']!r} is not a model")
    return problems


def model_settings(config: dict, name: str) -> dict:
    """The training defaults overridden by the model's own keys: everything its rule needs."""
    return {**config["training_defaults"], **config["models"][name]}


def backbone_settings(config: dict, name: str) -> dict:
    """Like model_settings; the description is left out so that rewording it retrains nothing."""
    spec = {k: v for k, v in config["backbones"][name].items() if k != "description"}
    return {**config["training_defaults"], **spec}


def load(path) -> dict:
    return validate(yaml.safe_load(Path(path).read_text()), source=str(path))
