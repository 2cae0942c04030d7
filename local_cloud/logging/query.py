"""An evaluator for the part of the Cloud Logging query language that the sink filters use.

The local sink applies the very filter text that deploy.sh gives the cloud sink, so the two cannot
drift apart. Supported, with the documented semantics
(https://cloud.google.com/logging/docs/view/logging-query-language):

- comparisons `path = value`, `path : value` (has: substring), `path =~ "regex"` (search, as RE2
  does for the subset used here), and `path = ("a" OR "b")`;
- paths are dotted field names into the LogEntry JSON; a segment may be quoted, as in
  `labels."ml.googleapis.com/job_state"`; a repeated field matches if any element does; a missing
  field makes the comparison false;
- values are "quoted strings" (\\" and \\\\ escape) or bare words such as true or ERROR;
  string comparisons are not case sensitive, regular expressions are;
- NOT, OR and AND, where, as in Cloud Logging, NOT binds tightest and OR binds tighter than AND
  (`a OR b AND c` is `(a OR b) AND c`); juxtaposed terms are ANDed; parentheses group.

Anything else (global text restrictions, <, >, !=, functions, the '-' shorthand) is refused with
`FilterSyntaxError` rather than silently misread.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_OPERATORS = ("=~", "!~", "!=", ">=", "<=", "=", ":", ">", "<")
_SUPPORTED = frozenset({"=", ":", "=~"})
_KEYWORDS = frozenset({"AND", "OR", "NOT"})
_WORD = re.compile(r'[^\s()"=:<>!~]+')

Predicate = Callable[[Any], bool]


class FilterSyntaxError(ValueError):
    """A filter this evaluator cannot read; the text says what and where."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "op", "string", "word", "end"
    text: str
    start: int
    end: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "()":
            tokens.append(_Token(char, char, i, i + 1))
            i += 1
        elif char == '"':
            value, end = _read_string(text, i)
            tokens.append(_Token("string", value, i, end))
            i = end
        elif any(text.startswith(op, i) for op in _OPERATORS):
            op = next(op for op in _OPERATORS if text.startswith(op, i))
            tokens.append(_Token("op", op, i, i + len(op)))
            i += len(op)
        else:
            match = _WORD.match(text, i)
            if not match:
                raise FilterSyntaxError(f"unexpected {char!r} at column {i + 1}")
            tokens.append(_Token("word", match.group(), i, match.end()))
            i = match.end()
    tokens.append(_Token("end", "", len(text), len(text)))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            following = text[i + 1]
            out.append(following if following in '"\\' else "\\" + following)
            i += 2
        elif char == '"':
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise FilterSyntaxError(f"unterminated string starting at column {start + 1}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, kind: str) -> _Token:
        token = self.take()
        if token.kind != kind:
            raise FilterSyntaxError(f"expected {kind!r} at column {token.start + 1}, found {_show(token)}")
        return token

    def is_keyword(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "word" and token.text == word

    def parse(self) -> Predicate:
        if self.peek().kind == "end":
            raise FilterSyntaxError("empty filter")
        predicate = self.conjunction()
        token = self.peek()
        if token.kind != "end":
            raise FilterSyntaxError(f"unexpected {_show(token)} at column {token.start + 1}")
        return predicate

    def conjunction(self) -> Predicate:
        parts = [self.disjunction()]
        while True:
            if self.is_keyword("AND"):
                self.take()
            elif self.peek().kind in ("end", ")"):
                break
            parts.append(self.disjunction())  # juxtaposition is AND
        return parts[0] if len(parts) == 1 else (lambda entry: all(p(entry) for p in parts))

    def disjunction(self) -> Predicate:
        parts = [self.unary()]
        while self.is_keyword("OR"):
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda entry: any(p(entry) for p in parts))

    def unary(self) -> Predicate:
        if self.is_keyword("NOT"):
            self.take()
            inner = self.unary()
            return lambda entry: not inner(entry)
        if self.peek().kind == "(":
            self.take()
            inner = self.conjunction()
            self.expect(")")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        path = self.path()
        token = self.take()
        if token.kind != "op":
            raise FilterSyntaxError(
                f"expected an operator after {'.'.join(path)!r} at column {token.start + 1} "
                "(global text restrictions are not supported: name a field)"
            )
        if token.text not in _SUPPORTED:
            raise FilterSyntaxError(f"operator {token.text!r} at column {token.start + 1} is not supported")
        values = self.values()
        test = _comparison(token.text, values, token.start)
        return lambda entry: any(test(found) for found in _resolve(entry, path))

    def path(self) -> list[str]:
        token = self.take()
        if token.kind not in ("word", "string") or (token.kind == "word" and token.text in _KEYWORDS):
            raise FilterSyntaxError(f"expected a field name at column {token.start + 1}, found {_show(token)}")
        if token.kind == "word" and token.text.startswith("-"):
            raise FilterSyntaxError(f"'-' negation at column {token.start + 1} is not supported: use NOT")
        raw = token.text if token.kind == "word" else None
        segments: list[str] = [token.text] if raw is None else raw.split(".")
        end = token.end
        # Glue adjacent pieces such as labels."ml.googleapis.com/job_state".field.
        while self.peek().start == end and self.peek().kind in ("word", "string"):
            piece = self.take()
            if piece.kind == "string":
                if segments[-1] != "":
                    raise FilterSyntaxError(f"expected '.' before the quoted name at column {piece.start + 1}")
                segments[-1] = piece.text
            else:
                if not piece.text.startswith("."):
                    raise FilterSyntaxError(f"expected '.' at column {piece.start + 1}")
                segments += piece.text[1:].split(".")
            end = piece.end
        if any(segment == "" for segment in segments):
            raise FilterSyntaxError(f"empty field name in {'.'.join(segments)!r} at column {token.start + 1}")
        return segments

    def values(self) -> list[str]:
        if self.peek().kind == "(":
            self.take()
            values = [self.value()]
            while self.is_keyword("OR"):
                self.take()
                values.append(self.value())
            self.expect(")")
            return values
        return [self.value()]

    def value(self) -> str:
        token = self.take()
        if token.kind == "string" or (token.kind == "word" and token.text not in _KEYWORDS):
            return token.text
        raise FilterSyntaxError(f"expected a value at column {token.start + 1}, found {_show(token)}")


def _show(token: _Token) -> str:
    return "end of filter" if token.kind == "end" else repr(token.text)


def _comparison(op: str, values: list[str], column: int) -> Callable[[Any], bool]:
    if op == "=~":
        try:
            patterns = [re.compile(value) for value in values]
        except re.error as err:
            raise FilterSyntaxError(f"bad regular expression at column {column + 1}: {err}") from None
        return lambda found: (text := _scalar_text(found)) is not None and any(p.search(text) for p in patterns)
    folded = [value.casefold() for value in values]
    if op == "=":
        return lambda found: (text := _scalar_text(found)) is not None and text.casefold() in folded
    return lambda found: any(_has(found, value) for value in folded)  # ":"


def _has(found: Any, folded_value: str) -> bool:
    if isinstance(found, Mapping):
        return any(_has(item, folded_value) for item in found.values())
    if isinstance(found, list):
        return any(_has(item, folded_value) for item in found)
    text = _scalar_text(found)
    return text is not None and folded_value in text.casefold()


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return None


def _resolve(entry: Any, path: list[str]) -> list[Any]:
    current = [entry]
    for segment in path:
        following: list[Any] = []
        for value in current:
            if isinstance(value, Mapping) and segment in value:
                child = value[segment]
                if isinstance(child, list):
                    following.extend(child)
                else:
                    following.append(child)
        current = following
    return current


@dataclass(frozen=True)
class LogFilter:
    """A parsed filter; `matches` takes a LogEntry dict (or anything with a `raw` dict)."""

    text: str
    _predicate: Predicate

    def matches(self, entry: Any) -> bool:
        raw = getattr(entry, "raw", entry)
        return bool(self._predicate(raw))


@lru_cache(maxsize=64)
def compile_filter(text: str) -> LogFilter:
    """Parse a filter once; FilterSyntaxError says where it goes wrong."""
    if not isinstance(text, str):
        raise FilterSyntaxError("a filter is a string")
    return LogFilter(text, _Parser(text).parse())


def matches(filter_text: str, entry: Any) -> bool:
    """Whether a LogEntry (dict, or events.log_entries.LogEntry) matches a filter."""
    return compile_filter(filter_text).matches(entry)
