"""Files written and read whole: atomically replaced text, and JSON documents whose
problems are input errors naming the file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rsched.domain import FieldError, InvalidInput


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` through a temporary file in the
    same folder and ``os.replace``: readers see the old file or the new one, never half."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def read_document(path: str | os.PathLike[str]) -> Any:
    """The parsed JSON of ``path``; an unreadable or malformed file is an input error."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(FieldError("", "no such file"), source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(FieldError("", f"cannot read the file: {exc}"), source=source) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise InvalidInput(
            FieldError("", f"not valid JSON: {exc.msg} at {where}"), source=source
        ) from exc
