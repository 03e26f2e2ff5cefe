"""Whole-database backups: create, list, verify, restore, and retention.

The database is one unit: every backup holds all programs, whatever program's write
asked for it (``program_id`` only records who asked, and names the file).

- PostgreSQL: ``pg_dump -Fc`` (custom format), restored with ``pg_restore --no-owner``
  in one transaction. SQLite: the online backup API (``sqlite3.Connection.backup``), a
  consistent copy even while other connections write; the copy is switched to a
  rollback journal so the file is self-contained.
- File name: ``rsched-{program or all}-{UTC time}-{reason}.{dump|sqlite}[.enc]``. The
  file is written under a temporary name in the same folder and renamed into place;
  any failure removes it, so a failed backup leaves no partial file.
- The SHA-256 of the stored bytes is recorded in ``backups`` (a ``BackupRow``, written
  with the service's own session right after the rename; if that write fails the file
  is removed again). ``verify`` recomputes it.
- Encryption at rest (optional): the file is a Fernet token of the backup bytes, made
  with the newest key of ``encryption_keys(settings)`` and readable with any of them.
  An encrypted backup is built in memory, so its plain bytes never touch the disk.
- ``ensure_recent`` is the ``BackupGuard`` of publishing (and of every other write that
  must be preceded by a backup): it reuses the newest backup younger than ``max_age``
  after re-checking its checksum, else makes one; a failure raises ``BackupFailed``,
  which blocks the write.
- ``retention`` deletes backups older than 30 days, always keeping the two newest and
  every protected one (the baseline). Only the maintenance leader runs it for real: it
  passes its lease's fence, checked in the transaction that marks the rows deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select, text, update
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rsched.config import DEFAULT_BACKUP_MAX_AGE_MINUTES, Settings
from rsched.db.base import make_engine, make_sessionmaker
from rsched.db.models import BackupRow
from rsched.domain.errors import FieldError, InvalidInput, NotFound, RschedError
from rsched.services.auth import encryption_keys

DEFAULT_MAX_AGE = timedelta(minutes=DEFAULT_BACKUP_MAX_AGE_MINUTES)
RETENTION_DAYS = 30
KEEP_AT_LEAST = 2
COMMAND_TIMEOUT_SECONDS = 3600.0
REASON_MAX = 64
_SLUG = re.compile(r"[^A-Za-z0-9_-]+")
_CHUNK = 1 << 20

Fence = Callable[[Session], object]
"""Called first in the transaction that marks backups deleted (the leader's fence)."""


class BackupFailed(RschedError):
    """A backup (or a restore) could not be made; the message names the cause. A write
    guarded by a backup is refused when this is raised."""


class RestoreRefused(RschedError):
    """The restore target is not empty (pass ``force`` to overwrite it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupRecord:
    id: str
    program_id: str | None
    path: str
    reason: str
    sha256: str
    size_bytes: int
    encrypted: bool
    protected: bool
    created_at: datetime
    verified_at: datetime | None
    deleted_at: datetime | None

    @property
    def name(self) -> str:
        return Path(self.path).name

    @classmethod
    def of(cls, row: BackupRow) -> BackupRecord:
        return cls(
            id=row.id,
            program_id=row.program_id,
            path=row.path,
            reason=row.reason,
            sha256=row.sha256,
            size_bytes=row.size_bytes,
            encrypted=row.encrypted,
            protected=row.protected,
            created_at=_utc(row.created_at),
            verified_at=_utc(row.verified_at) if row.verified_at is not None else None,
            deleted_at=_utc(row.deleted_at) if row.deleted_at is not None else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPlan:
    """What retention deletes and keeps (``dry_run``: nothing was changed)."""

    now: datetime
    cutoff: datetime
    dry_run: bool
    delete: tuple[BackupRecord, ...]
    keep: tuple[BackupRecord, ...]
    problems: tuple[str, ...] = ()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _slug(value: str, limit: int = 40) -> str:
    return _SLUG.sub("_", value).strip("_")[:limit] or "x"


def _check_reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip() or len(reason.strip()) > REASON_MAX:
        raise InvalidInput(FieldError("reason", f"a reason of 1-{REASON_MAX} characters"))
    return reason.strip()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _kind(url: str) -> str:
    name = make_url(url).get_backend_name()
    if name not in {"sqlite", "postgresql"}:
        raise InvalidInput(FieldError("database_url", "must be a sqlite:// or postgresql:// URL"))
    return name


def _sqlite_path(url: str, label: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise InvalidInput(FieldError(label, "needs a SQLite database file path"))
    return Path(database)


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI (no driver, no password) and the environment with the
    password, so the password never shows in a process list."""
    parsed: URL = make_url(url)
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    dsn = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return dsn, env


def _sqlite_plain(data: bytes) -> sqlite3.Connection:
    """An in-memory SQLite database holding ``data`` (the bytes of a backup)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(data)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        conn.close()
        raise
    return conn


class BackupService:
    """Backups of the database at ``database_url`` into ``folder`` (default
    ``{data_dir}/backups``). Use as a context manager, or call ``close``."""

    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str,
        folder: Path | None = None,
        max_age: timedelta = DEFAULT_MAX_AGE,
        encrypt: bool = False,
        pg_dump: str = "pg_dump",
        pg_restore: str = "pg_restore",
        clock: Callable[[], datetime] | None = None,
        command_timeout: float = COMMAND_TIMEOUT_SECONDS,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.kind = _kind(database_url)
        self.folder = Path(folder) if folder is not None else settings.data_dir / "backups"
        if max_age <= timedelta(0):
            raise InvalidInput(FieldError("max_age", "must be positive"))
        self.max_age = max_age
        self.encrypt = encrypt
        self.pg_dump = pg_dump
        self.pg_restore = pg_restore
        self.command_timeout = command_timeout
        self._clock = clock or (lambda: datetime.now(UTC))
        self._engine: Engine | None = None
        self._factory: sessionmaker[Session] | None = None
        self._fernet: MultiFernet | None = None

    # ------------------------------------------------------------ plumbing

    def __enter__(self) -> BackupService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self._engine = None
        self._factory = None

    def _sessions(self) -> sessionmaker[Session]:
        if self._factory is None:
            self._engine = make_engine(self.database_url)
            self._factory = make_sessionmaker(self._engine)
        return self._factory

    def _now(self) -> datetime:
        return _utc(self._clock())

    def _keys(self) -> MultiFernet:
        if self._fernet is None:
            keys = encryption_keys(self.settings)
            try:
                self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
            except (ValueError, TypeError) as exc:
                raise InvalidInput(
                    FieldError("RSCHED_ENCRYPTION_KEYS", f"not a Fernet key: {exc}")
                ) from None
        return self._fernet

    def _row(self, s: Session, backup_id: str) -> BackupRow:
        row = s.get(BackupRow, backup_id)
        if row is None or row.deleted_at is not None:
            raise NotFound(f"backup {backup_id!r} not found")
        return row

    # ------------------------------------------------------------ create

    def file_name(self, *, reason: str, program_id: str | None, at: datetime) -> str:
        stamp = _utc(at).strftime("%Y%m%dT%H%M%S.%fZ")
        ext = "dump" if self.kind == "postgresql" else "sqlite"
        who = _slug(program_id) if program_id else "all"
        name = f"rsched-{who}-{stamp}-{_slug(reason)}.{ext}"
        return f"{name}.enc" if self.encrypt else name

    def create(
        self,
        *,
        reason: str,
        program_id: str | None = None,
        protected: bool = False,
    ) -> BackupRecord:
        """Back up the whole database now; the record of the new file."""
        reason = _check_reason(reason)
        fernet = self._keys() if self.encrypt else None
        at = self._now()
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise BackupFailed(f"backup folder {self.folder} cannot be created: {exc}") from exc
        if not self.folder.is_dir():
            raise BackupFailed(f"backup folder {self.folder} is not a directory")
        final = self.folder / self.file_name(reason=reason, program_id=program_id, at=at)
        if final.exists():
            raise BackupFailed(f"backup file {final} already exists")
        tmp = self.folder / f".{final.name}.{uuid.uuid4().hex[:8]}.part"
        try:
            if fernet is not None:
                _write_private(tmp, fernet.encrypt(self._dump_bytes()))
            else:
                self._dump_file(tmp)
            sha256 = _sha256_file(tmp)
            size = tmp.stat().st_size
            os.replace(tmp, final)
            _fsync_dir(self.folder)
        except BackupFailed:
            _remove(tmp)
            raise
        except (OSError, sqlite3.Error, subprocess.SubprocessError) as exc:
            _remove(tmp)
            raise BackupFailed(f"backup to {final} failed: {exc}") from exc
        except BaseException:
            _remove(tmp)
            raise
        row = BackupRow(
            id=uuid.uuid4().hex,
            program_id=program_id,
            path=str(final.resolve()),
            reason=reason,
            sha256=sha256,
            size_bytes=size,
            encrypted=fernet is not None,
            protected=protected,
            created_at=at,
            verified_at=at,
            deleted_at=None,
        )
        try:
            with self._sessions()() as s, s.begin():
                s.add(row)
        except SQLAlchemyError as exc:
            _remove(final)
            raise BackupFailed(
                f"backup {final.name} was written but could not be recorded (file removed): {exc}"
            ) from exc
        except BaseException:
            _remove(final)
            raise
        return BackupRecord.of(row)

    def _run(self, argv: list[str], env: dict[str, str], **kwargs: Any) -> bytes:
        try:
            done = subprocess.run(  # a fixed argv, no shell
                argv,
                env=env,
                capture_output=True,
                timeout=self.command_timeout,
                check=False,
                **kwargs,
            )
        except FileNotFoundError as exc:
            raise BackupFailed(f"{argv[0]} not found: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise BackupFailed(f"{argv[0]} timed out after {self.command_timeout:g} s") from exc
        except OSError as exc:
            raise BackupFailed(f"{argv[0]} could not run: {exc}") from exc
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip() or "no message"
            raise BackupFailed(f"{Path(argv[0]).name} failed (exit {done.returncode}): {detail}")
        out: bytes = done.stdout
        return out

    def _dump_file(self, tmp: Path) -> None:
        if self.kind == "postgresql":
            dsn, env = _libpq(self.database_url)
            self._run([self.pg_dump, "--format=custom", f"--file={tmp}", f"--dbname={dsn}"], env)
            if not tmp.is_file():
                raise BackupFailed(f"{self.pg_dump} wrote no file")
            tmp.chmod(0o600)
            return
        source = self._sqlite_source()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            target = sqlite3.connect(tmp)
            try:
                source.backup(target)
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
        finally:
            source.close()

    def _dump_bytes(self) -> bytes:
        if self.kind == "postgresql":
            dsn, env = _libpq(self.database_url)
            data = self._run([self.pg_dump, "--format=custom", f"--dbname={dsn}"], env)
            if not data:
                raise BackupFailed(f"{self.pg_dump} wrote nothing")
            return data
        source = self._sqlite_source()
        try:
            memory = sqlite3.connect(":memory:")
            try:
                source.backup(memory)
                image = bytearray(memory.serialize())
            finally:
                memory.close()
        finally:
            source.close()
        # Bytes 18-19: file format versions, 2 = WAL. Make the copy a rollback-journal
        # database (what ``PRAGMA journal_mode=DELETE`` does on a file copy).
        image[18:20] = b"\x01\x01"
        return bytes(image)

    def _sqlite_source(self) -> sqlite3.Connection:
        path = _sqlite_path(self.database_url, "database_url")
        if not path.is_file():
            raise BackupFailed(f"SQLite database {path} not found")
        try:
            return sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise BackupFailed(f"SQLite database {path} cannot be opened: {exc}") from exc

    # ------------------------------------------------------------ guard

    def ensure_recent(self, *, program_id: str, reason: str) -> str:
        """The BackupGuard: the id of a verified backup younger than ``max_age`` (any
        backup will do: each holds the whole database), making one when there is none.
        Raises BackupFailed when no backup can be made: the write must not go on."""
        now = self._now()
        try:
            with self._sessions()() as s:
                candidates = list(
                    s.scalars(
                        select(BackupRow.id)
                        .where(
                            BackupRow.deleted_at.is_(None),
                            BackupRow.created_at > now - self.max_age,
                        )
                        .order_by(BackupRow.created_at.desc())
                        .limit(3)
                    )
                )
        except SQLAlchemyError as exc:
            raise BackupFailed(f"the backup records cannot be read: {exc}") from exc
        for backup_id in candidates:
            if self.verify(backup_id):
                return backup_id
        return self.create(reason=reason, program_id=program_id).id

    # ------------------------------------------------------------ list, verify

    def list(self, *, include_deleted: bool = False) -> list[BackupRecord]:
        """The backups, newest first."""
        with self._sessions()() as s:
            stmt = select(BackupRow).order_by(BackupRow.created_at.desc(), BackupRow.id)
            if not include_deleted:
                stmt = stmt.where(BackupRow.deleted_at.is_(None))
            return [BackupRecord.of(r) for r in s.scalars(stmt)]

    def get(self, backup_id: str) -> BackupRecord:
        with self._sessions()() as s:
            return BackupRecord.of(self._row(s, backup_id))

    def verify(self, backup_id: str) -> bool:
        """Recompute the file's SHA-256 (and, when encrypted, that a key of the keyring
        opens it). True sets ``verified_at``; False clears it, so the guard never
        relies on that backup again."""
        record = self.get(backup_id)
        ok = self._check(record)
        with self._sessions()() as s, s.begin():
            s.execute(
                update(BackupRow)
                .where(BackupRow.id == backup_id)
                .values(verified_at=self._now() if ok else None)
                .execution_options(synchronize_session=False)
            )
        return ok

    def _check(self, record: BackupRecord) -> bool:
        path = Path(record.path)
        try:
            if _sha256_file(path) != record.sha256:
                return False
            if record.encrypted:
                self._keys().decrypt(path.read_bytes())
        except (OSError, InvalidToken):
            return False
        return True

    def _plain_bytes(self, record: BackupRecord) -> bytes:
        path = Path(record.path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BackupFailed(f"backup file {path} cannot be read: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise BackupFailed(f"backup {record.id} does not match its checksum: not restored")
        if not record.encrypted:
            return data
        try:
            return self._keys().decrypt(data)
        except InvalidToken:
            raise BackupFailed(
                f"backup {record.id} cannot be decrypted with the configured keys"
            ) from None

    # ------------------------------------------------------------ restore

    def restore(self, backup_id: str, *, target_url: str, force: bool = False) -> BackupRecord:
        """Restore a backup into the database at ``target_url``, which must be empty
        (no tables) unless ``force``. A PostgreSQL target database must exist; a SQLite
        target file is created. The checksum is checked first."""
        record = self.get(backup_id)
        kind = _kind(target_url)
        made_by = "postgresql" if record.path.endswith((".dump", ".dump.enc")) else "sqlite"
        if kind != made_by:
            raise InvalidInput(
                FieldError("target_url", f"backup {backup_id} is a {made_by} backup, not {kind}")
            )
        if kind == "postgresql":
            self._restore_pg(record, target_url, force=force)
        else:
            self._restore_sqlite(record, target_url, force=force)
        return record

    def _restore_pg(self, record: BackupRecord, target_url: str, *, force: bool) -> None:
        try:
            engine = make_engine(target_url)
            try:
                with engine.connect() as conn:
                    tables = conn.scalar(
                        text(
                            "SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                            "ON n.oid = c.relnamespace "
                            "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') "
                            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                            "AND n.nspname NOT LIKE 'pg\\_toast%'"
                        )
                    )
            finally:
                engine.dispose()
        except SQLAlchemyError as exc:
            raise BackupFailed(f"restore target cannot be opened: {exc}") from exc
        if tables and not force:
            raise RestoreRefused(
                f"restore target is not empty ({tables} relations); use force to overwrite"
            )
        data = self._plain_bytes(record)
        dsn, env = _libpq(target_url)
        argv = [
            self.pg_restore,
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={dsn}",
        ]
        if tables:
            argv[1:1] = ["--clean", "--if-exists"]
        if not record.encrypted:
            self._run([*argv, record.path], env)
            return
        with tempfile.TemporaryDirectory(prefix="rsched-restore-") as private:
            plain = Path(private) / "restore.dump"
            try:
                _write_private(plain, data)
            except OSError as exc:
                raise BackupFailed(f"restore staging file cannot be written: {exc}") from exc
            self._run([*argv, str(plain)], env)

    def _restore_sqlite(self, record: BackupRecord, target_url: str, *, force: bool) -> None:
        path = _sqlite_path(target_url, "target_url")
        if path.exists():
            try:
                with contextlib.closing(sqlite3.connect(path)) as conn:
                    tables = conn.execute(
                        "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'view')"
                    ).fetchone()[0]
            except sqlite3.Error as exc:
                raise BackupFailed(f"restore target {path} cannot be opened: {exc}") from exc
            if tables and not force:
                raise RestoreRefused(
                    f"restore target {path} is not empty ({tables} tables); use force to overwrite"
                )
        data = self._plain_bytes(record)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            source = _sqlite_plain(data)
            try:
                with contextlib.closing(sqlite3.connect(path, timeout=30)) as target:
                    source.backup(target)
            finally:
                source.close()
        except (OSError, sqlite3.Error) as exc:
            raise BackupFailed(f"restore into {path} failed: {exc}") from exc

    # ------------------------------------------------------------ retention

    def retention(
        self,
        *,
        now: datetime | None = None,
        dry_run: bool,
        fence: Fence | None = None,
        keep_days: int = RETENTION_DAYS,
    ) -> RetentionPlan:
        """Delete backups older than ``keep_days``, keeping the ``KEEP_AT_LEAST`` newest
        and every protected one whatever their age. ``dry_run`` only plans. Otherwise
        the rows are marked deleted in one transaction that first calls ``fence`` (the
        leader's lease check), then the files are removed; a file whose row was marked
        but not removed (a crash in between) is removed by the next run."""
        at = _utc(now) if now is not None else self._now()
        cutoff = at - timedelta(days=keep_days)
        with self._sessions()() as s:
            rows = [
                BackupRecord.of(r)
                for r in s.scalars(
                    select(BackupRow)
                    .where(BackupRow.deleted_at.is_(None))
                    .order_by(BackupRow.created_at.desc(), BackupRow.id)
                )
            ]
            leftovers = [
                Path(p)
                for p in s.scalars(select(BackupRow.path).where(BackupRow.deleted_at.is_not(None)))
            ]
        newest = {r.id for r in rows[:KEEP_AT_LEAST]}
        delete = tuple(
            r for r in rows if r.created_at < cutoff and not r.protected and r.id not in newest
        )
        gone = {r.id for r in delete}
        keep = tuple(r for r in rows if r.id not in gone)
        if dry_run:
            return RetentionPlan(now=at, cutoff=cutoff, dry_run=True, delete=delete, keep=keep)
        if delete:
            with self._sessions()() as s, s.begin():
                if fence is not None:
                    fence(s)
                s.execute(
                    update(BackupRow)
                    .where(
                        BackupRow.id.in_(gone),
                        BackupRow.deleted_at.is_(None),
                        BackupRow.protected.is_(False),
                    )
                    .values(deleted_at=at)
                    .execution_options(synchronize_session=False)
                )
        problems: list[str] = []
        for path in [*(Path(r.path) for r in delete), *leftovers]:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                problems.append(f"{path}: {exc}")
        marked = tuple(replace(r, deleted_at=at) for r in delete)
        return RetentionPlan(
            now=at,
            cutoff=cutoff,
            dry_run=False,
            delete=marked,
            keep=keep,
            problems=tuple(problems),
        )


def service_for(settings: Settings, *, encrypt: bool | None = None) -> BackupService:
    """The backup service of the configured database (folder ``{data_dir}/backups``;
    ``max_age`` and, unless ``encrypt`` says otherwise, encryption from ``settings``:
    ``RSCHED_BACKUP_MAX_AGE_MINUTES``, ``RSCHED_BACKUP_ENCRYPT``)."""
    return BackupService(
        settings,
        database_url=settings.resolved_database_url(),
        max_age=settings.backup_max_age,
        encrypt=settings.backup_encrypt if encrypt is None else encrypt,
    )
