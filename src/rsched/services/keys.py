"""Key rotation for the encrypted columns: re-encrypt every stored value with the newest
key so the older keys can be retired.

Install the key list newest first (the new key, then every key still in use), run
``rotate_keys``, then drop the old keys from the settings. The work goes table by table
in primary-key order, one batch per transaction. Values already encrypted with the
newest key are left alone, so a run that was interrupted (or that races the application,
which always writes with the newest key) simply continues: nothing is done twice and
nothing is lost. Values are handled as raw Fernet tokens (bytes), never as text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from cryptography.fernet import InvalidToken
from sqlalchemy import (
    Column,
    CursorResult,
    LargeBinary,
    MetaData,
    Table,
    bindparam,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from rsched.crypto.fields import (
    EncryptedText,
    KeyringMissing,
    encrypted_with_newest,
    rotate_token,
)
from rsched.db import models  # noqa: F401  (registers the tables)
from rsched.db.base import Base, transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class RotationReport:
    rows_scanned: int = 0
    values_rotated: int = 0
    """Values re-encrypted with the newest key by this run."""
    values_current: int = 0
    """Values found already encrypted with the newest key (left alone)."""
    batches: int = 0
    rotated_by_column: dict[str, int] = field(default_factory=dict)
    """``table.column`` → values re-encrypted by this run."""


ProgressCallback = Callable[[str, RotationReport], None]
"""Called after each committed batch with the table name and the totals so far."""


def encrypted_columns(metadata: MetaData | None = None) -> list[tuple[Table, list[Column[Any]]]]:
    """Every table with ``EncryptedText`` columns, and those columns."""
    found: list[tuple[Table, list[Column[Any]]]] = []
    for table in (metadata or Base.metadata).sorted_tables:
        cols = [c for c in table.columns if isinstance(c.type, EncryptedText)]
        if cols:
            found.append((table, cols))
    return found


def rotate_keys(
    session_factory: sessionmaker[Session],
    *,
    batch: int = 500,
    on_progress: ProgressCallback | None = None,
) -> RotationReport:
    """Re-encrypt every encrypted value with the newest installed key. Raises
    ``KeyringMissing`` naming the row when a value cannot be read with any installed key
    (the batches before it stay committed)."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    totals = _Totals()
    for table, cols in encrypted_columns():
        _rotate_table(session_factory, table, cols, batch, totals, on_progress)
    return totals.report()


@dataclass
class _Totals:
    rows_scanned: int = 0
    values_rotated: int = 0
    values_current: int = 0
    batches: int = 0
    by_column: dict[str, int] = field(default_factory=dict)

    def report(self) -> RotationReport:
        return RotationReport(
            rows_scanned=self.rows_scanned,
            values_rotated=self.values_rotated,
            values_current=self.values_current,
            batches=self.batches,
            rotated_by_column=dict(self.by_column),
        )


def _rotate_table(
    session_factory: sessionmaker[Session],
    table: Table,
    cols: list[Column[Any]],
    batch: int,
    totals: _Totals,
    on_progress: ProgressCallback | None,
) -> None:
    pk = list(table.primary_key.columns)
    raw = [type_coerce(c, LargeBinary).label(f"enc_{i}") for i, c in enumerate(cols)]
    updates = {c.name: _update_statement(table, pk, c) for c in cols}
    last: Sequence[Any] | None = None
    while True:
        with transaction(session_factory) as session:
            stmt = select(*pk, *raw).order_by(*pk).limit(batch)
            if last is not None:
                stmt = stmt.where(tuple_(*pk) > tuple_(*last))
            rows = session.execute(stmt).all()
            for row in rows:
                key = tuple(row[: len(pk)])
                for col, value in zip(cols, row[len(pk) :], strict=True):
                    if value is None:
                        continue
                    _rotate_value(session, updates[col.name], table, col, key, bytes(value), totals)
            totals.rows_scanned += len(rows)
            totals.batches += 1
        if on_progress is not None:
            on_progress(table.name, totals.report())
        if len(rows) < batch:
            return
        last = tuple(rows[-1][: len(pk)])


def _update_statement(table: Table, pk: list[Column[Any]], col: Column[Any]) -> Any:
    """``UPDATE … SET col = :new WHERE pk = :k_i AND col = :old`` on raw bytes: a value
    the application changed meanwhile (written with the newest key) is not overwritten."""
    conditions = [c == bindparam(f"k_{i}", type_=c.type) for i, c in enumerate(pk)]
    conditions.append(type_coerce(col, LargeBinary) == bindparam("old", type_=LargeBinary))
    return update(table).where(*conditions).values({col.name: bindparam("new", type_=LargeBinary)})


def _rotate_value(
    session: Session,
    statement: Any,
    table: Table,
    col: Column[Any],
    key: tuple[Any, ...],
    token: bytes,
    totals: _Totals,
) -> None:
    try:
        if encrypted_with_newest(token):
            totals.values_current += 1
            return
        fresh = rotate_token(token)
    except InvalidToken:
        raise KeyringMissing(
            f"{table.name} {key!r}: {col.name} cannot be decrypted with the installed keys "
            "(add the key it was written with, after the newest)"
        ) from None
    params = {f"k_{i}": v for i, v in enumerate(key)} | {"old": token, "new": fresh}
    result = cast(CursorResult[Any], session.execute(statement, params))
    if result.rowcount == 1:
        totals.values_rotated += 1
        name = f"{table.name}.{col.name}"
        totals.by_column[name] = totals.by_column.get(name, 0) + 1
    else:  # rewritten by the application meanwhile, with the newest key
        totals.values_current += 1
