"""A parsed config file that remembers where every key came from.

:meth:`Document.parse` turns YAML text into plain Python data (dicts, lists, scalars) plus a map
from key path to line number, so every later error can say ``file:line: key.path: reason``.
We build the data from PyYAML's node graph ourselves instead of ``safe_load`` because we want:

* line numbers for every key and list item;
* duplicate keys as errors (``safe_load`` silently keeps the last one);
* ``${VAR}`` references kept unexpanded (as :class:`EnvScalar`) until a key is actually read,
  so a missing variable inside a module we ignore is not an error, and the error for one we
  read names its key and line;
* bounded work: nesting depth and alias expansion ("billion laughs") are capped.

:class:`Section` is the reader the schema uses: it rejects unknown keys (with a "did you mean"),
reads typed values through :mod:`gateway.config.validators`, and builds located errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from gateway.config.expand import ENV_PATTERN, MissingVariable, expand_env, has_reference
from gateway.config.validators import Invalid, describe
from gateway.errors import ConfigError

__all__ = ["Document", "EnvScalar", "Path", "Section", "format_path"]

T = TypeVar("T")
Path = tuple[str | int, ...]

MAX_DEPTH = 64
MAX_NODES = 200_000

_TAG = "tag:yaml.org,2002:"
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_TYPED_TAGS = {_TAG + t for t in ("null", "bool", "int", "float")}


@dataclass(frozen=True, slots=True)
class EnvScalar:
    """A string scalar holding ``${...}``; ``plain`` is False when it was quoted in the file."""

    raw: str
    plain: bool


def format_path(path: Path) -> str:
    """``("workers", 0, "config")`` -> ``workers[0].config``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def typed_scalar(text: str) -> Any:
    """What YAML makes of ``text`` as an unquoted scalar: null, bool, int, float or str.

    Timestamps and other implicit types stay strings; this is how an expanded plain scalar
    such as ``${PORT:3111}`` becomes the integer 3111, as in the reference.
    """
    tag: str = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    if tag not in _TYPED_TAGS:
        return text
    try:
        return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, text))
    except ValueError:  # a shape the resolver accepts but int()/float() refuses
        return text


class Document:
    """The data of one config file, its per-path line numbers, and the environment."""

    def __init__(self, source: str, root: Any, lines: dict[Path, int], env: Mapping[str, str]) -> None:
        self.source = source
        self.root = root
        self.lines = lines
        self.env = env

    @classmethod
    def parse(cls, text: str, *, source: str, env: Mapping[str, str]) -> Document:
        """Parse ``text``; YAML problems become ConfigError at ``source:line:col``."""
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            raise _yaml_error(exc, source) from None
        except yaml.YAMLError as exc:  # ReaderError (bad characters) has a position only
            raise ConfigError(f"invalid YAML: {_oneline(str(exc))}", file=source) from None
        except RecursionError:
            raise ConfigError("invalid YAML: nested too deeply", file=source) from None
        lines: dict[Path, int] = {(): 1}
        if node is None:
            return cls(source, None, lines, env)
        builder = _Builder(source, lines)
        try:
            root = builder.build(node, (), 0)
        except RecursionError:
            raise ConfigError("invalid YAML: nested too deeply", file=source) from None
        return cls(source, root, lines, env)

    def line(self, path: Path) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: Path, message: str) -> ConfigError:
        line = self.line(path)
        where = f"{self.source}:{line}" if line is not None else self.source
        return ConfigError(message, file=where, key=format_path(path) or None)

    def expand(self, value: EnvScalar, path: Path) -> str:
        try:
            return expand_env(value.raw, self.env)
        except MissingVariable as exc:
            raise self.error(path, exc.message) from None

    def resolve(self, value: Any, path: Path) -> Any:
        """Expand an :class:`EnvScalar` into what YAML would make of the result; other values
        pass through.

        An unquoted scalar is typed after expansion (``port: ${P:3111}`` is the integer 3111),
        as the reference's whole-text substitution does. A quoted scalar stays a string, unless
        it is one lone reference (``"${P:3111}"``), which is typed as the reference types lone
        references in configuration entries.
        """
        if not isinstance(value, EnvScalar):
            return value
        text = self.expand(value, path)
        if value.plain or ENV_PATTERN.fullmatch(value.raw):
            return typed_scalar(text)
        return text

    def read(self, value: Any, path: Path, validator: Callable[[Any], T]) -> T | None:
        """``validator`` applied to the resolved value; None when it is null.

        When an expanded value's YAML type is refused, its text is tried: ``engine_id:
        ${ID}`` with ``ID=0123`` is the string ``"0123"``, not an error about the integer 123.
        """
        resolved = self.resolve(value, path)
        if resolved is None:
            return None
        try:
            return validator(resolved)
        except Invalid as exc:
            if isinstance(value, EnvScalar) and not isinstance(resolved, str):
                try:
                    return validator(self.expand(value, path))
                except Invalid:
                    pass
            raise self.error(path, str(exc)) from None

    def section(self, path: Path, value: Any, keys: Collection[str], *, what: str = "") -> Section:
        return Section(self, path, value, keys, what=what)


class Section:
    """A mapping in the document with a fixed set of allowed keys, read by typed getters."""

    def __init__(
        self, doc: Document, path: Path, value: Any, keys: Collection[str], *, what: str = ""
    ) -> None:
        self.doc = doc
        self.path = path
        value = doc.resolve(value, path)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            label = what or "a mapping"
            raise doc.error(path, f"expected {label}, got {describe(value)}")
        self.data: dict[str, Any] = value
        self.keys = tuple(keys)
        for key in value:
            if key not in self.keys:
                raise doc.error((*path, key), _unknown_key_message(key, self.keys))

    def at(self, key: str) -> Path:
        return (*self.path, key)

    def has(self, key: str) -> bool:
        """Present and not null (null means "the default" everywhere)."""
        return self.raw(key) is not None

    def raw(self, key: str) -> Any:
        assert key in self.keys, key  # a schema bug, not a user error
        return self.doc.resolve(self.data.get(key), self.at(key))

    def error(self, key: str | None, message: str) -> ConfigError:
        return self.doc.error(self.at(key) if key is not None else self.path, message)

    def optional(self, key: str, validator: Callable[[Any], T]) -> T | None:
        assert key in self.keys, key
        return self.doc.read(self.data.get(key), self.at(key), validator)

    def get(self, key: str, validator: Callable[[Any], T], default: T) -> T:
        value = self.optional(key, validator)
        return default if value is None else value

    def require(self, key: str, validator: Callable[[Any], T], *, why: str = "") -> T:
        value = self.optional(key, validator)
        if value is None:
            raise self.error(key, f"required key is missing{why}")
        return value

    def child(self, key: str, keys: Collection[str], *, what: str = "") -> Section:
        return Section(self.doc, self.at(key), self.data.get(key), keys, what=what)

    def items(self, key: str, *, what: str = "a list") -> list[tuple[Path, Any]]:
        """The elements of a list value with their paths (env references left unexpanded)."""
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, f"expected {what}, got {describe(value)}")
        return [((*self.at(key), i), item) for i, item in enumerate(value)]

    def values(self, key: str, validator: Callable[[Any], T], *, nonempty: bool = False) -> list[T] | None:
        """A list of scalars, each expanded and validated; None when absent."""
        if not self.has(key):
            return None
        out: list[T] = []
        for path, item in self.items(key):
            value = self.doc.read(item, path, validator)
            if value is None:
                raise self.doc.error(path, "expected a value, got null")
            out.append(value)
        if nonempty and not out:
            raise self.error(key, "expected a non-empty list")
        return out


def _unknown_key_message(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(allowed) if allowed else "none"
    return f"unknown key{hint}; allowed here: {listed}"


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _yaml_error(exc: yaml.MarkedYAMLError, source: str) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "unreadable YAML"
    if exc.context and exc.problem and exc.context != exc.problem:
        problem = f"{exc.problem} ({exc.context})"
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    return ConfigError(f"YAML syntax error: {_oneline(problem)}", file=where)


class _Builder:
    """Node graph -> plain data, recording lines; enforces depth and size budgets."""

    def __init__(self, source: str, lines: dict[Path, int]) -> None:
        self.source = source
        self.lines = lines
        self.nodes = 0

    def fail(self, node: yaml.Node, message: str, path: Path = ()) -> ConfigError:
        mark = node.start_mark
        where = f"{self.source}:{mark.line + 1}:{mark.column + 1}"
        return ConfigError(message, file=where, key=format_path(path) or None)

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(node, f"document too large (more than {MAX_NODES} values after aliases)")
        if depth > MAX_DEPTH:
            raise self.fail(node, f"nested more than {MAX_DEPTH} levels deep")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if node.tag not in (_TAG + "seq", _TAG + "map"):
            raise self.fail(node, f"unsupported YAML tag {node.tag!r}")
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        raise self.fail(node, "unsupported YAML node")  # pragma: no cover - PyYAML has three kinds

    def scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag == _TAG + "str" or tag == _TAG + "timestamp":
            value: str = node.value
            if has_reference(value):
                return EnvScalar(value, plain=node.style is None)
            return value
        if tag in _TYPED_TAGS:
            try:
                return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)
            except (ValueError, yaml.YAMLError) as exc:
                raise self.fail(node, f"invalid {tag.removeprefix(_TAG)} value: {exc}") from None
        raise self.fail(node, f"unsupported YAML tag {tag!r}")

    def mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[str, Any]:
        seen: dict[str, yaml.Node] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _TAG + "merge":
                if key_node.value in seen:
                    first = seen[key_node.value].start_mark.line + 1
                    raise self.fail(
                        key_node, f"duplicate key (first set at line {first})", (*path, key_node.value)
                    )
                seen[key_node.value] = key_node
        try:
            _CONSTRUCTOR.flatten_mapping(node)  # resolves '<<' merge keys in place
        except yaml.MarkedYAMLError as exc:
            raise _yaml_error(exc, self.source) from None
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _TAG + "str":
                raise self.fail(key_node, f"keys must be strings, got {key_node.value[:40]!r}", path)
            key: str = key_node.value
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, (*path, key), depth + 1)
        return out
