"""Enriches rows on their way: splits a full name into first and last name and normalises a
country to its ISO 3166-1 alpha-2 code.

Configuration (``--set key=value``), all optional:

- ``name_column`` (default ``name``): the full name. ``"Ada Lovelace"`` gives
  ``first_name: "Ada"``, ``last_name: "Lovelace"``; ``"Lovelace, Ada"`` the same; a single
  word is a first name with ``last_name: null``; blank or null gives both null. A row without
  the column is left as it is.
- ``country_column`` (default ``country``): rewritten in place to the alpha-2 code when it is
  one (any case), an alpha-3 code or an English name this module knows (``"usa"``,
  ``"Germany"``, ``"UK"``); anything else is left unchanged and counted in a warning.

Built with componentize-py against ``wit/`` (world ``transform``); see README.md.
"""

import json
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Batch

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


class Transformer(exports.Transformer):
    def transform(self, batch: Batch) -> str:
        try:
            return _enrich(batch)
        except Err:
            raise
        except Exception:
            # Any other exception would trap the component, and the host error would only say
            # it aborted: the traceback, as the err string, reaches the host's error with the
            # module and the batch.
            raise Err(traceback.format_exc())


def _enrich(batch: Batch) -> str:
    name_column = host.config("name_column") or "name"
    country_column = host.config("country_column") or "country"
    try:
        changes = json.loads(batch.rows)
    except ValueError as err:
        raise Err(f"batch {batch.id}: rows are not JSON: {err}")
    unknown = 0
    for change in changes:
        row = change.get("row")
        if not isinstance(row, dict):
            continue
        if name_column in row:
            row["first_name"], row["last_name"] = split_name(row[name_column])
        country = row.get(country_column)
        if isinstance(country, str) and country.strip():
            code = country_code(country)
            if code is None:
                unknown += 1
            else:
                row[country_column] = code
    if unknown:
        host.log(
            host.Level.WARN,
            f"batch {batch.id}: {unknown} rows with a {country_column} not recognised, left as they are",
        )
    return json.dumps(changes, ensure_ascii=False, separators=(",", ":"))
