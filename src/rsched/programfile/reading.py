"""Reading a program file: its text, then the first pass (structure).

YAML is read safely, without YAML 1.1's base-60 numbers (so ``start: 19:00`` stays the
text ``19:00`` rather than the number 1140) and refusing duplicate keys; a syntax error
names its line. The first pass validates with the models of ``schema``; pydantic errors
become ``FieldError``s with paths such as ``people[3].pgy`` and short messages. When
the file as a whole fails, each section and record is validated alone, so that the
well-formed ones still get the loader's second pass.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from rsched.domain.errors import FieldError, InvalidInput
from rsched.programfile.schema import (
    LIST_SECTIONS,
    OBJECT_SECTIONS,
    HorizonSpec,
    ProgramFile,
    ProgramSpec,
    RulesSpec,
    SettingsSpec,
    Spec,
    WeightsSpec,
)

Format = Literal["yaml", "json"]


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML without base-60 numbers (``19:00`` stays text) and with duplicate keys refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_YamlLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def read_document(source: str | os.PathLike[str], fmt: Format | None = None) -> tuple[Any, str]:
    """The parsed document and a name for messages. ``source`` is a path or the text itself."""
    if isinstance(source, os.PathLike) or _looks_like_path(source):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise InvalidInput(FieldError("", f"cannot read {path}: {reason}")) from exc
        fmt = fmt or ("json" if path.suffix.lower() == ".json" else "yaml")
        name = str(path)
    else:
        text, name = str(source), ""
        fmt = fmt or ("json" if text.lstrip().startswith("{") else "yaml")
    try:
        if fmt == "json":
            return json.loads(text), name
        return yaml.load(text, Loader=_YamlLoader), name  # a SafeLoader subclass
    except json.JSONDecodeError as exc:
        err = FieldError(f"line {exc.lineno}", f"JSON syntax: {exc.msg} (column {exc.colno})")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark else ""
        column = f" (column {mark.column + 1})" if mark else ""
        err = FieldError(where, f"YAML syntax: {exc.problem or exc.context}{column}")
    except yaml.YAMLError as exc:
        err = FieldError("", f"YAML syntax: {exc}")
    raise InvalidInput(err, source=name)


def _looks_like_path(source: str) -> bool:
    if "\n" in source or len(source) > 1024:
        return False
    return Path(source).suffix.lower() in (".yaml", ".yml", ".json") or Path(source).is_file()



_MODELS: tuple[type[BaseModel], ...] = (
    ProgramFile, RulesSpec, WeightsSpec, *LIST_SECTIONS.values(), *OBJECT_SECTIONS.values()
)
_KNOWN_KEYS = sorted(
    {f.alias or name for model in _MODELS for name, f in model.model_fields.items()}
)


def pydantic_errors(exc: ValidationError) -> list[FieldError]:
    """Pydantic errors as ``FieldError``s with file-like paths and short messages."""
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        path, is_key = format_loc(err["loc"])
        message = _message(err)
        out.append(FieldError(path, f"key: {message}" if is_key else message))
    return out


def format_loc(loc: tuple[int | str, ...]) -> tuple[str, bool]:
    """``('people', 3, 'pgy')`` → ``people[3].pgy``; also whether a mapping key is at fault."""
    path, is_key = "", False
    for item in loc:
        if item == "[key]":
            is_key = True
        elif isinstance(item, int):
            path += f"[{item}]"
        else:
            path += f".{item}" if path else str(item)
    return path, is_key


_MESSAGES = {
    "missing": "required",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text (quote it in YAML)",
    "string_too_short": "must not be empty",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def _message(err: Any) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1]) if err["loc"] else ""
        close = difflib.get_close_matches(key, _KNOWN_KEYS, n=1)
        return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind in ("literal_error", "enum"):
        return f"must be {ctx.get('expected', 'one of the allowed values')}"
    bounds = {"greater_than_equal": "≥", "less_than_equal": "≤", "greater_than": ">"}
    if kind in bounds:
        return f"must be {bounds[kind]} {next(iter(ctx.values()), '')}".rstrip()
    if kind == "less_than":
        return f"must be < {ctx.get('lt')}"
    message = str(err["msg"])
    return message.removeprefix("Value error, ")


# ------------------------------------------------------------ the first pass


def first_pass(mapping: Mapping[str, Any]) -> tuple[Parts, list[FieldError]]:
    """Structure: the whole file against ``ProgramFile``; when that fails, every part
    alone, so that the well-formed records still reach the second pass."""
    try:
        return Parts.of(ProgramFile.model_validate(mapping)), []
    except ValidationError as exc:
        return Parts.salvage(mapping), pydantic_errors(exc)


_SECTIONS = list(ProgramFile.model_fields)


def file_order(error: FieldError) -> tuple[int, int]:
    """Errors sorted by section (in the schema's order), then by record index."""
    head, _, rest = error.path.partition("[")
    section = head.split(".")[0]
    rank = _SECTIONS.index(section) if section in _SECTIONS else -1
    index = rest.split("]")[0]
    return rank, int(index) if index.isdigit() else -1


@dataclass
class Parts:
    """What the first pass could read: whole sections, and each record that parsed."""

    program: ProgramSpec | None = None
    horizon: HorizonSpec | None = None
    settings: SettingsSpec | None = None
    lists: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    broken: dict[str, set[str] | None] = field(default_factory=dict)
    """Per section, the ids of records that failed the first pass (None: the whole section)."""

    @classmethod
    def of(cls, doc: ProgramFile) -> Parts:
        lists = {name: list(enumerate(getattr(doc, name))) for name in LIST_SECTIONS}
        return cls(doc.program, doc.horizon, doc.settings, lists)

    @classmethod
    def salvage(cls, raw: Mapping[str, Any]) -> Parts:
        """Each object section and each record validated alone; failures remembered by id."""
        objects: dict[str, Any] = {}
        for name, model in OBJECT_SECTIONS.items():
            objects[name] = _try(model, raw.get(name, {} if name == "settings" else None))
        parts = cls(objects["program"], objects["horizon"], objects["settings"])
        for name, model in LIST_SECTIONS.items():
            items = raw.get(name, [])
            if not isinstance(items, list):
                parts.lists[name], parts.broken[name] = [], None
                continue
            good, bad = [], set()
            for index, item in enumerate(items):
                spec = _try(model, item)
                if spec is not None:
                    good.append((index, spec))
                elif isinstance(item, Mapping):
                    bad.add(str(item.get("code" if name == "shift_types" else "id")))
            parts.lists[name], parts.broken[name] = good, bad
        return parts

    def excused(self, section: str, key: str) -> bool:
        """True when ``key`` may be the id of a record of ``section`` that failed to parse."""
        broken = self.broken.get(section, set())
        return broken is None or key in broken

    def mark(self, section: str, key: str) -> None:
        """Record ``key`` of ``section`` as broken: references to it are not errors."""
        broken = self.broken.setdefault(section, set())
        if broken is not None:
            broken.add(key)


def _try(model: type[Spec], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError:
        return None
