"""Image ids from a data set's tables: checked before any path is built from them, and turned into
safe file names before any artifact or temporary file is named after them.

A data folder may come from anyone, so its tables are untrusted text. An id (or any other column a
reader joins into a path, such as MIMIC-CXR-JPG's subject and study ids) is refused when it holds a
backslash, a NUL character, a ``..`` component or is an absolute path, and when it holds ``/``
except where the layout defines ids as relative paths (the original MIMIC folders'
``p10/p10000032/s…/img``). A refused id is a problem of ``data check`` and of every loading
command, named with its table. Every path built from a checked id therefore stays inside the data
folder; a symbolic link that lives inside the data folder is followed (data folders assembled from
links to shared storage keep working).

Artifact and temporary file names come from :func:`safe_name`, never from a raw id: an id made of
letters, digits, ``.``, ``_`` and ``-`` (not starting with ``.``) is its own name; any other id is
flattened (``/`` and other characters → ``_``) and gets a short digest of the original, so two ids
never share a name. Writers keep a mapping file of the ids whose name changed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath, PureWindowsPath

_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
DIGEST_CHARS = 8
"""Hex digits of the digest :func:`safe_name` appends to an id it had to change."""


def id_problem(value: str, *, relative_path: bool = False) -> str | None:
    """Why ``value`` cannot be used as a file name (or, with ``relative_path``, a relative path) in a data folder.

    Args:
        value: the id as read from the table.
        relative_path: the layout defines ids as ``/``-separated relative paths.

    Returns:
        ``None`` when the id is fine, else a short reason (``"is an absolute path"``...).
    """
    text = str(value)
    if not text or text in (".", ".."):
        return "is empty or a folder name"
    if "\0" in text:
        return "contains a NUL character"
    if "\\" in text:
        return "contains a backslash"
    if text.startswith("/"):
        return "is an absolute path"
    if PureWindowsPath(text).drive:
        return "is an absolute path or names a drive"
    parts = PurePosixPath(text).parts
    if ".." in parts:
        return "contains a '..' component"
    if "/" in text and not relative_path:
        return "contains '/'"
    if any(p in ("", ".") for p in text.split("/")):
        return "contains an empty or '.' path component"
    return None


def id_problems(source: object, column: str, values, *, relative_path: bool = False) -> tuple[list[str], list[bool]]:
    """Check every value of one column: one sentence per refused id and a per-row ok mask.

    Args:
        source: the table the values come from (named in the sentences).
        column: the column's name.
        values: the values, in row order.
        relative_path: the layout defines these ids as relative paths.
    """
    problems, ok = [], []
    for value in values:
        reason = id_problem(value, relative_path=relative_path)
        ok.append(reason is None)
        if reason is not None:
            problems.append(
                f"{source}: {column} {str(value)!r} {reason}, so it could name a file outside the data folder; "
                "fix or remove the row."
            )
    return problems, ok


def safe_name(image_id: str) -> str:
    """A file name for ``image_id`` that cannot leave its folder (see the module docstring)."""
    text = str(image_id)
    if _SAFE.match(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_CHARS]
    flat = _UNSAFE_CHARS.sub("_", text).strip("._")[:80] or "id"
    return f"{flat}-{digest}"
