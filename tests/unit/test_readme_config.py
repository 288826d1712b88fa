"""The README's configuration reference (its section `## Configuration`) agrees with
config/schema.yaml: every key it names exists there, and every default it quotes is the
schema's `default:`.

The section is prose. A key is written in backticks, either dotted from a section
(`clean.relabels`, `other.species`: a path from the top of the schema or from any object in it)
or as YAML (`exclusions: /lab/shared/exclusions.tsv`); a default is quoted as
"`key` (default `value`)", the value in YAML. Other backticked words (file names, rules,
functions) are not keys and are not checked."""

import re

import pytest
import yaml
from conftest import REPO

from fishid.config import load_schema

KEY = r"[a-z][a-z0-9_]*"
NAME = r"[A-Za-z0-9_.-]*?"  # below a map such as models: a name of the user's (RI2)
DOTTED = re.compile(rf"`({KEY}(?:\.(?:{KEY}|{NAME}))*\.{KEY})`")
AS_YAML = re.compile(rf"`({KEY}): [^`]+`")
DEFAULT = re.compile(rf"`({KEY}(?:\.{KEY})*)` \(default `([^`]*)`\)")


def configuration_section() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Configuration\n") :]
    return section[: section.index("\n## ", 1)]


def children(node: dict, schema: dict) -> dict:
    """The schema nodes of the keys an object node may hold, by name ("*": any name of a map
    such as models), its $ref and allOf followed."""
    if "$ref" in node:
        node = {**node, **schema["$defs"][node["$ref"].rsplit("/", 1)[1]]}
    found = dict(node.get("properties", {}))
    if isinstance(node.get("additionalProperties"), dict):
        found["*"] = node["additionalProperties"]
    for part in node.get("allOf", []) + [node[k] for k in ("then", "else") if k in node]:
        found |= {k: v for k, v in children(part, schema).items() if k not in found}
    return found


def resolved(path: list[str], node: dict, schema: dict) -> dict | None:
    """The schema node of `path` below `node`; None where there is none. The first key must be
    one the node names (a relative key starts at a named key, not at any name of a map)."""
    for depth, key in enumerate(path):
        keys = children(node, schema)
        node = keys.get(key) or (keys.get("*") if depth and key not in keys else None)
        if node is None:
            return None
    return node


def object_nodes(node, schema: dict):
    """Every node of the schema that holds keys: a relative key may start at any of them."""
    if isinstance(node, dict):
        if children(node, schema):
            yield node
        for value in node.values():
            yield from object_nodes(value, schema)
    elif isinstance(node, list):
        for value in node:
            yield from object_nodes(value, schema)


def named_keys(text: str, schema: dict) -> list[str]:
    """The keys the text names: dotted from a key of the schema, or written as YAML."""
    every_name = {name for node in object_nodes(schema, schema) for name in children(node, schema)}
    dotted = [
        k for k in DOTTED.findall(text) if k.split(".")[0] in every_name or k.split(".")[0] in schema["properties"]
    ]
    return dotted + AS_YAML.findall(text)


def unknown_keys(text: str, schema: dict) -> list[str]:
    starts = list(object_nodes(schema, schema))
    return [k for k in named_keys(text, schema) if not any(resolved(k.split("."), n, schema) for n in starts)]


def wrong_defaults(text: str, schema: dict) -> list[str]:
    problems = []
    for key, quoted in DEFAULT.findall(text):
        node = resolved(key.split("."), schema, schema)
        if node is None or "default" not in node:
            problems.append(
                f"{key}: the README quotes a default, the schema has {'no such key' if node is None else 'none'}"
            )
        elif yaml.safe_load(quoted) != node["default"]:
            problems.append(f"{key}: the README says {quoted}, the schema {node['default']!r}")
    return problems


def test_every_key_of_the_configuration_section_is_in_the_schema():
    schema, text = load_schema(), configuration_section()
    assert len(named_keys(text, schema)) >= 5  # it still names keys, so this checks something
    assert unknown_keys(text, schema) == []


def test_every_default_the_configuration_section_quotes_is_the_schemas():
    schema, text = load_schema(), configuration_section()
    assert len(DEFAULT.findall(text)) >= 3
    assert wrong_defaults(text, schema) == []


@pytest.mark.parametrize(
    "text, problem",
    [
        ("a table (`clean.exclusion`) that", "clean.exclusion"),
        ("write `exclusion: x.tsv` to", "exclusion"),
        ("a model whose `models.RI2.control_off` names", "models.RI2.control_off"),
    ],
)
def test_a_key_the_schema_lacks_is_found(text, problem):
    """Shown against wrong keys: a misspelt dotted key, a misspelt YAML key, a key under a map."""
    assert unknown_keys(text, load_schema()) == [problem]


def test_a_wrong_or_invented_default_is_found():
    schema = load_schema()
    assert unknown_keys("`models.RI2.control_of` and `other.species`", schema) == []
    assert wrong_defaults("`clean.relabels` (default `config/relabels.tsv`)", schema) == []
    assert wrong_defaults("`detect.threshold` (default `0.6`)", schema) == [
        "detect.threshold: the README says 0.6, the schema 0.5"
    ]
    assert wrong_defaults("`clean.min_side` (default `32`)", schema) == [
        "clean.min_side: the README quotes a default, the schema has none"
    ]
