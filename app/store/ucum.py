"""UCUM (Unified Code for Units of Measure) canonical forms for quantity search.

A stored Quantity with system http://unitsofmeasure.org is indexed with `canonical(value, code)`
so that `value-quantity=5.4|http://unitsofmeasure.org|mmol/L` also finds values stored as
`mol/m3` or `umol/mL`: commensurable codes get the same canonical unit string, and the value is
scaled to it.

Choices (see fhir_profiles/UCUM.md):
- Base units are UCUM's seven (m, s, g, rad, K, C, cd) plus `mol`. UCUM itself defines mol as the
  pure number 6.02214076e23, which would make `mmol/L` commensurable with `10*20/L` but turn every
  concentration into a huge count; like other FHIR servers we keep `mol` as its own base.
- Arbitrary units (`[IU]`, `[arb'U]`, ...) are their own base: UCUM says they compare with nothing
  but themselves (and units defined from them, e.g. `[IU]` = `[iU]`).
- Special (non-linear) units such as Cel, [degF], [pH], B, Np give None. Callers scale search
  ranges by `canonical(v)/v`, which is only right for a proportional conversion, so an offset
  unit like Cel stays on its code-equality fallback instead of being shifted to kelvin.
- Annotations `{...}` carry no meaning (`{score}` alone is 1). Only case-sensitive codes.

The unit table is generated from the official ucum-essence.xml by fhir_profiles/ucum_build.py
into fhir_profiles/ucum_units.json; it is read once, on first use, so the generator can import
this module's parser before the table exists.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Final

__all__ = [
    "DATA_PATH",
    "Atom",
    "NonLinearUnit",
    "UcumError",
    "canonical",
    "conversion",
    "parse",
]

DATA_PATH: Final = Path(__file__).resolve().parents[2] / "fhir_profiles" / "ucum_units.json"

# Real codes are a few characters; the cap keeps hostile input from building giant Fractions.
_MAX_CODE_LEN: Final = 200
_MAX_EXPONENT: Final = 64
_EXPONENT_RE: Final = re.compile(r"^(.*?)([+-]?\d+)$", re.DOTALL)
_DELIMS: Final = frozenset("./(){}")


class UcumError(ValueError):
    """The code is not valid UCUM (or uses a unit the table does not have)."""


class NonLinearUnit(UcumError):
    """The code uses a special unit (Cel, [pH], B, ...) that has no multiplicative factor."""


@dataclass(frozen=True, slots=True)
class Atom:
    """One unit atom: `factor` base units raised to `dims`; `metric` atoms accept prefixes."""

    factor: Fraction
    dims: Mapping[str, int] = field(default_factory=dict)
    metric: bool = False


Resolver = Callable[[str], Atom | None]
_UNITY: Final = Atom(Fraction(1))


def _mul(a: Atom, b: Atom, sign: int) -> Atom:
    dims = dict(a.dims)
    for k, e in b.dims.items():
        n = dims.get(k, 0) + sign * e
        if n:
            dims[k] = n
        else:
            dims.pop(k, None)
    factor = a.factor * b.factor if sign > 0 else a.factor / b.factor
    return Atom(factor, dims)


def _pow(a: Atom, exp: int) -> Atom:
    return Atom(a.factor**exp, {k: e * exp for k, e in a.dims.items()})


class _Parser:
    """Recursive descent over UCUM's grammar: `.` and `/` are left-associative with equal
    precedence (so `kg/m.s` is kg.s/m, as the spec says), a leading `/` inverts, exponents bind
    to the preceding simple unit, parentheses nest, and bare integers are factors."""

    __slots__ = ("_pos", "_prefixes", "_resolve", "_special", "_text")

    def __init__(
        self, text: str, resolve: Resolver, prefixes: Mapping[str, Fraction], special: Callable[[str], bool]
    ) -> None:
        self._text = text
        self._pos = 0
        self._resolve = resolve
        self._prefixes = prefixes
        self._special = special

    def run(self) -> Atom:
        if not self._text:
            raise UcumError("empty unit")
        result = self._term()
        if self._pos != len(self._text):
            raise UcumError(f"unexpected {self._text[self._pos]!r} at {self._pos}")
        return result

    def _peek(self) -> str:
        return self._text[self._pos] if self._pos < len(self._text) else ""

    def _term(self) -> Atom:
        if self._peek() == "/":
            self._pos += 1
            value = _mul(_UNITY, self._component(), -1)
        else:
            value = self._component()
        while (op := self._peek()) in (".", "/"):
            self._pos += 1
            value = _mul(value, self._component(), 1 if op == "." else -1)
        return value

    def _component(self) -> Atom:
        c = self._peek()
        if c == "(":
            self._pos += 1
            inner = self._term()
            if self._peek() != ")":
                raise UcumError("unbalanced parenthesis")
            self._pos += 1
            # Not in the formal grammar, but UCUM's own example table writes `(8.h){shift}`.
            if self._peek() == "{":
                self._annotation()
            return inner
        if c == "{":
            self._annotation()
            return _UNITY
        if not c or c in _DELIMS:
            raise UcumError(f"unit expected at {self._pos}")
        token = self._simple_token()
        value = self._annotatable(token)
        if self._peek() == "{":
            self._annotation()
        return value

    def _annotation(self) -> None:
        end = self._text.find("}", self._pos)
        if end < 0 or "{" in self._text[self._pos + 1 : end]:
            raise UcumError("unbalanced annotation")
        self._pos = end + 1

    def _simple_token(self) -> str:
        # Square brackets are opaque: `B[10.nV]` or `[m/s2/Hz^(1/2)]` contain delimiters.
        start, text, depth = self._pos, self._text, 0
        while self._pos < len(text):
            ch = text[self._pos]
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
                if depth < 0:
                    raise UcumError("unbalanced bracket")
            elif depth == 0 and ch in _DELIMS:
                break
            self._pos += 1
        if depth:
            raise UcumError("unbalanced bracket")
        return text[start : self._pos]

    def _annotatable(self, token: str) -> Atom:
        if token.isdigit() and token.isascii():
            return Atom(Fraction(int(token)))
        # No atom ends in a digit (the generator checks), so trailing digits are an exponent.
        m = _EXPONENT_RE.match(token)
        if m and m.group(1):
            exp = int(m.group(2))
            if abs(exp) > _MAX_EXPONENT:
                raise UcumError("exponent too large")
            return _pow(self._unit(m.group(1)), exp)
        return self._unit(token)

    def _unit(self, symbol: str) -> Atom:
        if any(ch.isspace() for ch in symbol):
            raise UcumError("whitespace in unit")
        if self._special(symbol):
            raise NonLinearUnit(symbol)
        atom = self._resolve(symbol)
        if atom is not None:
            return atom
        for prefix, pfactor in self._prefixes.items():
            if len(symbol) > len(prefix) and symbol.startswith(prefix):
                rest = symbol[len(prefix) :]
                if self._special(rest):
                    raise NonLinearUnit(symbol)
                base = self._resolve(rest)
                if base is not None and base.metric:
                    return Atom(pfactor * base.factor, base.dims)
        raise UcumError(f"unknown unit {symbol!r}")


def parse(
    code: str,
    resolve: Resolver,
    prefixes: Mapping[str, Fraction],
    special: Callable[[str], bool] = lambda _s: False,
) -> Atom:
    """Parse `code` against an explicit table (used by the generator to evaluate definitions).

    `prefixes` should be ordered longest first so `da` wins over `d`. Raises UcumError."""
    return _Parser(code, resolve, prefixes, special).run()


@dataclass(frozen=True, slots=True)
class _Table:
    units: dict[str, Atom]
    prefixes: dict[str, Fraction]
    special: frozenset[str]


@lru_cache(maxsize=1)
def _table() -> _Table:
    raw = json.loads(DATA_PATH.read_text(encoding="utf-8"))
    units = {
        code: Atom(Fraction(f), {str(k): int(v) for k, v in dims.items()}, bool(metric))
        for code, (f, dims, metric, *_definition) in raw["units"].items()
    }
    prefixes = {p: Fraction(f) for p, f in sorted(raw["prefixes"].items(), key=lambda kv: -len(kv[0]))}
    return _Table(units, prefixes, frozenset(raw["special"]))


def _unit_string(dims: Mapping[str, int]) -> str:
    if not dims:
        return "1"
    # Positive exponents first reads like a UCUM code (g.m-3); any fixed order would do.
    ordered = sorted(dims.items(), key=lambda kv: (kv[1] < 0, kv[0]))
    return ".".join(k if e == 1 else f"{k}{e}" for k, e in ordered)


@lru_cache(maxsize=8192)
def conversion(code: str) -> tuple[float, str] | None:
    """(factor, canonical unit) for a UCUM code, or None if it is invalid or non-linear.

    `value * factor` is the value in canonical units; the factor is computed exactly and
    rounded once. Cached because a server sees the same few dozen codes over and over."""
    if not isinstance(code, str) or len(code) > _MAX_CODE_LEN:
        return None
    t = _table()
    try:
        atom = _Parser(code, t.units.get, t.prefixes, t.special.__contains__).run()
        factor = float(atom.factor)
    except (UcumError, OverflowError, ZeroDivisionError):
        return None
    if factor == 0.0 or not math.isfinite(factor):
        return None
    return factor, _unit_string(atom.dims)


def canonical(value: float, code: str) -> tuple[float, str] | None:
    """`value` in UCUM base units and the canonical unit string; None when `code` is not
    linear UCUM. Commensurable codes share the unit string (mg/dL and g/L both give g.m-3)."""
    conv = conversion(code)
    if conv is None:
        return None
    return value * conv[0], conv[1]
