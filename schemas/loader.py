"""Load Trigger resources from YAML files and folders, reporting every problem at once.

Rules (the same YAML serves `eventbus run -f`, `eventbus up` and `kubectl apply`):

- A path is a file (read whatever its extension) or a folder: every `*.yaml` / `*.yml` below it,
  recursively, in sorted order of their relative paths. Files and folders whose name starts with `.`
  are skipped, which keeps out `.git` and the `..data` / `..2024_...` copies Kubernetes makes when a
  ConfigMap is mounted as a volume.
- A file holds one or more YAML documents. Empty documents are skipped but keep their number, so
  `#3` is always the third document of the file.
- A document is a `Trigger`, or a `List` (or `TriggerList`, as `kubectl get -o yaml` prints) whose
  `items` are Triggers. Any other `kind` is an error rather than silently skipped: a misspelt kind, or
  a Deployment in the triggers folder, is a mistake worth hearing about.
- Field names are the camelCase ones only (`consumerGroup`, not `consumer_group`); unknown fields are
  errors with a suggestion. `status` is accepted and ignored, so `kubectl get -o yaml` output loads.
- Two triggers with the same `<namespace>/<name>` are an error naming both places.
- Secret references are not resolved here: an unset environment variable is the runtime's concern.

Every problem in every document of every file is collected and raised together as one
`TriggerSpecError`, each `SpecProblem` printing like
`triggers.yaml#2 spec.delivery.retry.attempts: must be >= 0`.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import types
import warnings
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from schemas.duration import format_duration
from schemas.errors import SpecProblem, TriggerSpecError
from schemas.trigger import KIND, DeprecatedField, Trigger

__all__ = ["SpecProblem", "TriggerSpecError", "load_triggers", "parse_triggers"]

YAML_SUFFIXES = (".yaml", ".yml")
LIST_KINDS = ("List", f"{KIND}List")
TOP_LEVEL_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")

_Loc = tuple[int | str, ...]

log = logging.getLogger("eventbus.spec")


def parse_triggers(text: str, filename: str) -> list[Trigger]:
    """The Triggers in `text` (YAML, one or more documents); `filename` names it in problems.

    Raises TriggerSpecError listing every problem, duplicates within the text included.
    """
    found, problems = _parse(text, filename)
    problems += _duplicates(found)
    if problems:
        raise TriggerSpecError(problems)
    return [t for t, _ in found]


def load_triggers(path: str | os.PathLike[str]) -> list[Trigger]:
    """The Triggers in a YAML file, or in every `*.yaml` / `*.yml` file below a folder (see module doc).

    Raises TriggerSpecError listing every problem across all files; an existing folder without YAML
    files gives an empty list.
    """
    root = Path(path)
    if root.is_dir():
        files = sorted(
            (
                f
                for f in root.rglob("*")
                if f.suffix in YAML_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(root).parts)
                and f.is_file()
            ),
            key=lambda f: f.relative_to(root).as_posix(),
        )
    elif root.exists():
        files = [root]
    else:
        raise TriggerSpecError([SpecProblem(str(root), None, "", "no such file or directory")])

    found: list[tuple[Trigger, _Place]] = []
    problems: list[SpecProblem] = []
    for f in files:
        name = str(f)
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            problems.append(SpecProblem(name, None, "", f"not UTF-8 text (byte {exc.start})"))
            continue
        except OSError as exc:
            problems.append(SpecProblem(name, None, "", f"cannot read: {exc.strerror or exc}"))
            continue
        more, trouble = _parse(text, name)
        found += more
        problems += trouble
    problems += _duplicates(found)
    if problems:
        raise TriggerSpecError(problems)
    return [t for t, _ in found]


# --- documents -------------------------------------------------------------------------------


class _Place(NamedTuple):
    """Where a loaded trigger came from, for duplicate reports."""

    file: str
    document: int
    prefix: str  # "" or "items[3]."

    def __str__(self) -> str:
        return f"{self.file}#{self.document}" + (f" {self.prefix.rstrip('.')}" if self.prefix else "")


def _parse(text: str, filename: str) -> tuple[list[tuple[Trigger, _Place]], list[SpecProblem]]:
    found: list[tuple[Trigger, _Place]] = []
    problems: list[SpecProblem] = []
    loader = _StrictLoader(text)
    number = 0  # of the document being read; a syntax error ends the file
    try:
        while True:
            try:
                more = loader.check_data()  # type: ignore[no-untyped-call]
            except yaml.YAMLError as exc:  # at the start of the next document
                problems.append(SpecProblem(filename, number + 1, "", _yaml_message(exc)))
                break
            if not more:
                break
            number += 1
            try:
                doc = loader.get_data()
            except yaml.YAMLError as exc:
                problems.append(SpecProblem(filename, number, "", _yaml_message(exc)))
                break
            for line, column, key in loader.duplicates:
                message = f"duplicate key {key!r} at line {line}, column {column}"
                problems.append(SpecProblem(filename, number, "", message))
            loader.duplicates.clear()
            if doc is not None:
                _document(doc, filename, number, found, problems)
    finally:
        loader.dispose()
    return found, problems


def _document(
    doc: object,
    filename: str,
    number: int,
    found: list[tuple[Trigger, _Place]],
    problems: list[SpecProblem],
) -> None:
    def problem(path: str, message: str) -> None:
        problems.append(SpecProblem(filename, number, path, message))

    if not isinstance(doc, dict):
        problem("", f"must be a mapping (a {KIND} resource), got {_kind_of(doc)}")
        return
    kind = doc.get("kind")
    if kind in LIST_KINDS:
        items = doc.get("items")
        if items is None:
            return
        if not isinstance(items, list):
            problem("items", f"must be a list, got {_kind_of(items)}")
            return
        for i, item in enumerate(items):
            prefix = f"items[{i}]."
            if not isinstance(item, dict):
                problem(f"items[{i}]", f"must be a mapping (a {KIND} resource), got {_kind_of(item)}")
                continue
            _trigger(item, filename, number, prefix, found, problems)
        return
    _trigger(doc, filename, number, "", found, problems)


def _trigger(
    doc: dict[Any, Any],
    filename: str,
    number: int,
    prefix: str,
    found: list[tuple[Trigger, _Place]],
    problems: list[SpecProblem],
) -> None:
    def problem(path: str, message: str) -> None:
        problems.append(SpecProblem(filename, number, prefix + path, message))

    kind = doc.get("kind")
    if kind is None:
        problem("kind", "required")
        return
    if kind != KIND:
        lists = "" if prefix else " or List"
        problem("kind", f"must be {KIND}{lists}, got {_show(kind)}")
        return
    before = len(problems)
    for key in doc:
        if key not in TOP_LEVEL_FIELDS:
            problem(_path((key,)), _unknown_field(key, TOP_LEVEL_FIELDS))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecatedField)
            trigger = Trigger.model_validate(doc, by_alias=True, by_name=False)
    except ValidationError as exc:
        for err in exc.errors():
            problem(_path(err["loc"]), _message(err))
        return
    for w in caught:
        if isinstance(w.message, DeprecatedField) and trigger.spec.source.cron is not None:
            log.warning(f"{filename}#{number} {prefix}spec.source.cron.{w.message.old}: deprecated, write "
                        f"{w.message.new} (as in a Kubernetes CronJob)")
    if len(problems) == before:
        found.append((trigger, _Place(filename, number, prefix)))


def _duplicates(found: Sequence[tuple[Trigger, _Place]]) -> list[SpecProblem]:
    first: dict[str, _Place] = {}
    problems: list[SpecProblem] = []
    for trigger, place in found:
        if trigger.key in first:
            file, doc, prefix = place
            problems.append(
                SpecProblem(
                    file, doc, prefix + "metadata.name",
                    f"duplicate trigger {trigger.key} (first defined at {first[trigger.key]})",
                )
            )
        else:
            first[trigger.key] = place
    return problems


# --- YAML --------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that notes duplicate mapping keys (PyYAML keeps the last one silently)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    mark = key_node.start_mark
                    self.duplicates.append((mark.line + 1, mark.column + 1, str(key)))
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or "syntax error"
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}"
    return f"invalid YAML: {exc}"


# --- pydantic errors into short messages ---------------------------------------------------------

_PATTERNS = {
    r"^/": "must start with /",
    r"^https?://": "must start with http:// or https://",
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$": (
        "must be a lowercase DNS name: letters, digits, '-' and '.', starting and ending alphanumeric"
    ),
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$": (
        "must be a lowercase DNS label: letters, digits and '-', starting and ending alphanumeric"
    ),
}

_OPERATORS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}

_TYPES = {
    "string_type": "must be a string",
    "string_unicode": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    value = err.get("input")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        loc = err["loc"]
        return _unknown_field(loc[-1], _aliases_at(loc[:-1]))
    if kind in _TYPES:
        return f"{_TYPES[kind]}, got {_show(value)}"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        if len(allowed) == 1:
            return f"must be {allowed[0]}"
        return "must be one of: " + ", ".join(allowed)
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = _OPERATORS[kind]
        bound = next(iter(ctx.values()))
        if isinstance(value, str) and isinstance(bound, int | float):  # a duration
            return f"must be {op} {format_duration(float(bound))}"
        return f"must be {op} {bound}"
    if kind in ("string_too_short", "too_short"):
        n = ctx.get("min_length", 1)
        if n == 1:
            return "must not be empty"
        return f"must have at least {n} {'characters' if kind == 'string_too_short' else 'items'}"
    if kind in ("string_too_long", "too_long"):
        n = ctx.get("max_length")
        return f"must have at most {n} {'characters' if kind == 'string_too_long' else 'items'}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return _PATTERNS.get(pattern, f"must match {pattern}") + f", got {_show(value)}"
    if kind in ("value_error", "assertion_error"):
        inner = ctx.get("error")
        if inner is not None:
            return str(inner)
    msg = err["msg"]
    return msg[:1].lower() + msg[1:]


def _unknown_field(key: object, allowed: Sequence[str]) -> str:
    suggestion = _closest(str(key), allowed)
    return "unknown field" + (f" (did you mean {suggestion!r}?)" if suggestion else "")


def _closest(word: str, allowed: Sequence[str]) -> str | None:
    def norm(s: str) -> str:
        return s.replace("_", "").replace("-", "").lower()

    for a in allowed:
        if norm(a) == norm(word):
            return a
    by_norm = {norm(a): a for a in allowed}
    match = difflib.get_close_matches(norm(word), list(by_norm), n=1, cutoff=0.6)
    return by_norm[match[0]] if match else None


def _aliases_at(loc: _Loc) -> list[str]:
    """The camelCase field names of the model at `loc` (empty when `loc` is not a model)."""
    t: Any = Trigger
    for part in loc:
        t = _unwrap(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            fields = {f.alias or n: f for n, f in t.model_fields.items()}
            if not isinstance(part, str) or part not in fields:
                return []
            t = fields[part].annotation
        elif get_origin(t) is list and isinstance(part, int):
            t = get_args(t)[0]
        elif get_origin(t) is dict:
            t = get_args(t)[1]
        else:
            return []
    t = _unwrap(t)
    if isinstance(t, type) and issubclass(t, BaseModel):
        return [f.alias or n for n, f in t.model_fields.items()]
    return []


def _unwrap(t: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` to `X`."""
    while True:
        origin = get_origin(t)
        if origin is Annotated:
            t = get_args(t)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(t) if a is not type(None)]
            if len(args) != 1:
                return t
            t = args[0]
        else:
            return t


_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _path(loc: _Loc) -> str:
    """`spec.source.kafka.topics[0]` from a pydantic loc (dict keys that are not names are quoted)."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _SIMPLE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{_show(part)}]"
    return out


def _show(value: object) -> str:
    """A value as YAML would spell it, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return _show(value)
    return f"{type(value).__name__} {_show(value)}"

