"""Enriches rows on their way: splits a full name into first and last name and normalises a
country to its ISO 3166-1 alpha-2 code.

Configuration (``--set key=value``), all optional. The module declares its keys (the
``lifecycle`` export), so the host refuses any other at start; ``init`` checks their values
before any row is read:

- ``name_column`` (default ``name``): the full name. ``"Ada Lovelace"`` gives
  ``first_name: "Ada"``, ``last_name: "Lovelace"``; ``"Lovelace, Ada"`` the same; a single
  word is a first name with ``last_name: null``; blank or null gives both null. A row without
  the column is left as it is. A name that is not text (a number, a list) is rejected: the host
  keeps the row as a dead letter with the reason, and the rest of the batch goes on.
- ``country_column`` (default ``country``): rewritten in place to the alpha-2 code when it is
  one (any case), an alpha-3 code or an English name this module knows (``"usa"``,
  ``"Germany"``, ``"UK"``); anything else is left unchanged and counted in a warning.

An exception while transforming fails the batch as ``fatal``, with its traceback.

Built with componentize-py against ``wit/`` (world ``transform``, ``tidemark:processor@0.2.0``);
see README.md.
"""

import gc
import json
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Batch,
    ConfigKey,
    ProcessorError_Fatal,
    Rejection,
    Transformed,
)

# Every batch runs in a fresh instance, dropped after the call: the cycle collector could only
# spend time there (it walked the parsed rows for ~5% of this module's time, issue 13), and
# reference counting still frees what the batch lets go of.
gc.disable()

# Alpha-3 codes and English names of the countries this example knows, to alpha-2.
# Alpha-2 codes are accepted as they are (upper-cased), and "UK" is taken for GB.
_COUNTRIES = {
    "AR": ("ARG", "argentina"),
    "AT": ("AUT", "austria"),
    "AU": ("AUS", "australia"),
    "BE": ("BEL", "belgium"),
    "BR": ("BRA", "brazil"),
    "CA": ("CAN", "canada"),
    "CH": ("CHE", "switzerland"),
    "CN": ("CHN", "china"),
    "DE": ("DEU", "germany", "deutschland"),
    "DK": ("DNK", "denmark"),
    "ES": ("ESP", "spain", "españa"),
    "FI": ("FIN", "finland"),
    "FR": ("FRA", "france"),
    "GB": ("GBR", "united kingdom", "great britain", "britain", "england", "uk"),
    "IE": ("IRL", "ireland"),
    "IN": ("IND", "india"),
    "IT": ("ITA", "italy", "italia"),
    "JP": ("JPN", "japan"),
    "KR": ("KOR", "south korea", "korea"),
    "MX": ("MEX", "mexico"),
    "NL": ("NLD", "netherlands", "the netherlands", "holland"),
    "NO": ("NOR", "norway"),
    "NZ": ("NZL", "new zealand"),
    "PL": ("POL", "poland"),
    "PT": ("PRT", "portugal"),
    "SE": ("SWE", "sweden"),
    "US": ("USA", "united states", "united states of america", "america", "u.s.", "u.s.a."),
    "ZA": ("ZAF", "south africa"),
}

_ALIASES = {}
for _code, _names in _COUNTRIES.items():
    for _name in _names:
        _ALIASES[_name.lower()] = _code


def country_code(value):
    """The alpha-2 code of ``value``, or None when it is not one this module recognises."""
    text = " ".join(value.split()).lower()
    if text in _ALIASES:
        return _ALIASES[text]
    if len(text) == 2 and text.isascii() and text.isalpha():
        return text.upper()
    return None


def split_name(value):
    """``(first, last)`` of a full name; ``"Last, First"`` is understood too."""
    if not isinstance(value, str):
        return None, None
    if "," in value:
        last, _, first = value.partition(",")
        first, last = " ".join(first.split()), " ".join(last.split())
        return first or None, last or None
    words = value.split()
    if not words:
        return None, None
    return words[0], (" ".join(words[1:]) or None)


def _column(key, default):
    """The column named by configuration ``key``; raises ValueError when it is blank."""
    value = host.config(key)
    if value is None:
        return default
    if not value.strip():
        raise ValueError(f"{key} is blank: name a column, or leave {key} out for {default!r}")
    return value


class Lifecycle(exports.Lifecycle):
    def config_keys(self):
        return [
            ConfigKey(
                name="name_column",
                description="column with the full name (default name)",
                required=False,
                secret=False,
            ),
            ConfigKey(
                name="country_column",
                description="column with the country, rewritten to its alpha-2 code (default country)",
                required=False,
                secret=False,
            ),
        ]

    def init(self) -> None:
        try:
            _column("name_column", "name")
            _column("country_column", "country")
        except ValueError as err:
            raise Err(str(err))


class Transformer(exports.Transformer):
    def transform(self, batch: Batch) -> Transformed:
        try:
            return _enrich(batch)
        except Exception:
            # Any exception would otherwise trap the component, and the host's error would
            # only say it aborted: the traceback reaches the host's error with the module and
            # the batch.
            raise Err(ProcessorError_Fatal(traceback.format_exc()))


def _enrich(batch: Batch) -> Transformed:
    name_column = _column("name_column", "name")
    country_column = _column("country_column", "country")
    changes = json.loads(batch.rows)
    out = []
    rejections = []
    unknown = 0
    for index, change in enumerate(changes):
        row = change["row"]
        name = row.get(name_column)
        if name is not None and not isinstance(name, str):
            reason = f"{name_column} is {json.dumps(name)}, not text"
            rejections.append(Rejection(index=index, reason=reason))
            continue
        if name_column in row:
            row["first_name"], row["last_name"] = split_name(name)
        country = row.get(country_column)
        if isinstance(country, str) and country.strip():
            code = country_code(country)
            if code is None:
                unknown += 1
            else:
                row[country_column] = code
        out.append(change)
    if unknown:
        host.log(
            host.Level.WARN,
            f"batch {batch.id}: {unknown} rows with a {country_column} not recognised, left as they are",
        )
    rows = json.dumps(out, ensure_ascii=False, separators=(",", ":"))
    return Transformed(rows=rows, rejections=rejections)
