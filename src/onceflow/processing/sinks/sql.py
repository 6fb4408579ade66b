"""SQL names from users, made safe: validated, then quoted.

Values never go into SQL text (they are always parameters); names cannot be parameters,
so a table or column name must be a plain identifier, optionally schema-qualified for a
table. Quoting keeps its case: ``"Payments"`` and ``payments`` are different tables in
PostgreSQL, which folds unquoted names to lower case.
"""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A column type for tables the sink creates: words, digits, parentheses, commas.
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_ ]*(\([0-9, ]+\))?(\[\])?")


def quote_name(name: str, *, what: str = "column") -> str:
    """``name`` quoted as one SQL identifier; ``ValueError`` unless it is one."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{what} name must be a plain SQL identifier, got {name!r}")
    return f'"{name}"'


def quote_table(name: str) -> str:
    """A table name, ``table`` or ``schema.table``, quoted part by part."""
    parts = name.split(".") if isinstance(name, str) else [name]
    if len(parts) > 2:
        raise ValueError(f"table name must be TABLE or SCHEMA.TABLE, got {name!r}")
    return ".".join(quote_name(part, what="table") for part in parts)


def checked_type(sql_type: str) -> str:
    """A column type such as ``TEXT`` or ``NUMERIC(12, 2)``; ``ValueError`` otherwise."""
    if not isinstance(sql_type, str) or not _TYPE.fullmatch(sql_type.strip()):
        raise ValueError(f"column type must be a plain SQL type, got {sql_type!r}")
    return sql_type.strip()
