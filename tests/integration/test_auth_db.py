"""Auth, users and field encryption against real databases (SQLite and PostgreSQL):
login, refresh rotation and reuse detection, inactive users, the login rate limit,
the bootstrap admin, encrypted columns at rest, key rotation (resumable), start-up
refusals and the `rsched admin` / `rsched keys` commands."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from rsched.cli.main import main
from rsched.config import Settings, get_settings
from rsched.crypto.fields import KEYRING, KeyringMissing, install_keys, new_key
from rsched.db.base import transaction
from rsched.db.models import (
    AbsenceRow,
    AuditRow,
    LoginAttemptRow,
    PersonRow,
    ProgramRow,
    RefreshTokenRow,
    UserRow,
)
from rsched.domain.errors import InvalidInput
from rsched.services import auth
from rsched.services.access import Forbidden, Membership, Role, Unauthenticated
from rsched.services.auth import (
    RateLimited,
    actor_from_access_token,
    login,
    logout,
    refresh,
    startup,
)
from rsched.services.keys import rotate_keys
from rsched.services.users import add_membership, bootstrap_admin, create_user, set_active

JWT_SECRET = "k7QeR2vX9pLm4TzW8sYb1NcJ6hGd3FaU5oEi0rKq-Zx8Vn2Bm4Lp6Qw1Er3Ty5Ui7Op9As"
BOOT_SECRET = "b0otstrap-Q8wE4rT6yU1iO3pA5sD7fG9hJ2kL"
PASSWORD = "Tr0ubadour&3x"
PROGRAM = "im-demo"


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        env="test",
        data_dir=tmp_path,
        database_url=db_url,
        jwt_secret=JWT_SECRET,
        login_attempts_per_window=3,
        login_window_seconds=300,
        bootstrap_admin_secret=BOOT_SECRET,
    )


def add_program(session: Session, program_id: str = PROGRAM) -> None:
    session.add(
        ProgramRow(
            id=program_id,
            name="Internal Medicine (demo)",
            timezone="America/Chicago",
            academic_year_start=date(2026, 7, 1),
            block_length_days=28,
            horizon_start=date(2026, 7, 1),
            horizon_end=date(2027, 6, 30),
            periods=[],
            settings={},
            created_at=datetime.now(UTC),
        )
    )
    session.flush()


def add_person(
    session: Session,
    person_id: str,
    *,
    program_id: str = PROGRAM,
    kind: str = "resident",
    military_status: str | None = None,
    accommodation_notes: str | None = None,
) -> None:
    session.add(
        PersonRow(
            program_id=program_id,
            id=person_id,
            name=f"Resident {person_id}",
            kind=kind,
            pgy=1 if kind == "resident" else None,
            tags=[],
            active=True,
            military_status=military_status,
            accommodation_notes=accommodation_notes,
        )
    )
    session.flush()


def add_absence(session: Session, absence_id: str, person_id: str, leave_type: str) -> None:
    start = datetime(2026, 8, 3, 5, tzinfo=UTC)
    session.add(
        AbsenceRow(
            program_id=PROGRAM,
            id=absence_id,
            person_id=person_id,
            start=start,
            end=start + timedelta(days=7),
            leave_type=leave_type,
            blocking=True,
        )
    )
    session.flush()


def make_user(factory: sessionmaker[Session], email: str = "ada@example.org") -> str:
    with transaction(factory) as session:
        return create_user(session, email=email, password=PASSWORD)


def do_login(
    factory: sessionmaker[Session], settings: Settings, email: str, password: str = PASSWORD
) -> auth.TokenPair:
    with transaction(factory) as session:
        return login(session, settings, email=email, password=password)


def do_refresh(factory: sessionmaker[Session], settings: Settings, token: str) -> auth.TokenPair:
    with transaction(factory) as session:
        return refresh(session, settings, token)


def actor_of(factory: sessionmaker[Session], settings: Settings, token: str) -> Any:
    with transaction(factory) as session:
        return actor_from_access_token(session, settings, token)


def audit_rows(factory: sessionmaker[Session], action: str) -> list[AuditRow]:
    with transaction(factory) as session:
        return list(
            session.scalars(select(AuditRow).where(AuditRow.action == action).order_by(AuditRow.id))
        )


# --- login -----------------------------------------------------------------------------


def test_login_gives_tokens_for_the_user_and_their_memberships(
    session_factory: sessionmaker[Session], settings: Settings, fernet_keys: list[str]
) -> None:
    user_id = make_user(session_factory)
    with transaction(session_factory) as session:
        add_program(session)
        add_person(session, "r1")
        add_membership(
            session, user_id=user_id, program_id=PROGRAM, role="resident", person_id="r1"
        )

    pair = do_login(session_factory, settings, "  ADA@example.org ")
    actor = actor_of(session_factory, settings, pair.access_token)
    assert actor.user_id == user_id
    assert not actor.is_admin
    assert actor.memberships == {PROGRAM: Membership(role=Role.RESIDENT, person_id="r1")}
    assert pair.expires_in == settings.access_token_minutes * 60
    assert pair.access_token not in repr(pair) and pair.refresh_token not in repr(pair)

    with transaction(session_factory) as session:
        stored = session.scalars(select(RefreshTokenRow)).one()
    assert stored.token_hash == hashlib.sha256(pair.refresh_token.encode()).hexdigest()
    assert stored.user_id == user_id and stored.used_at is None and not stored.revoked
    assert [r.outcome for r in audit_rows(session_factory, "auth.login")] == ["ok"]


def test_wrong_password_and_unknown_email_get_the_same_answer_and_cost(
    session_factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_user(session_factory)
    checked: list[str] = []
    real_verify = auth.verify_password

    def spy(password: str, stored: str) -> tuple[bool, str | None]:
        checked.append(stored)
        return real_verify(password, stored)

    monkeypatch.setattr(auth, "verify_password", spy)
    with pytest.raises(Unauthenticated) as wrong:
        do_login(session_factory, settings, "ada@example.org", "Wrong-password-1")
    with pytest.raises(Unauthenticated) as unknown:
        do_login(session_factory, settings, "nobody@example.org", "Wrong-password-1")
    assert str(wrong.value) == str(unknown.value) == "invalid email or password"
    # the unknown email was still checked against an argon2 hash (same cost)
    assert len(checked) == 2 and all(h.startswith("$argon2id$") for h in checked)

    refused = audit_rows(session_factory, "auth.login")
    assert [(r.outcome, r.detail["reason"]) for r in refused] == [
        ("refused", "wrong_password"),
        ("refused", "unknown_email"),
    ]
    with transaction(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(LoginAttemptRow)) == 2


def test_an_inactive_user_is_refused_at_login_refresh_and_with_a_live_token(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    user_id = make_user(session_factory)
    pair = do_login(session_factory, settings, "ada@example.org")
    assert actor_of(session_factory, settings, pair.access_token).user_id == user_id

    with transaction(session_factory) as session:
        set_active(session, user_id=user_id, active=False, actor="admin-1")

    with pytest.raises(Unauthenticated, match="inactive"):
        actor_of(session_factory, settings, pair.access_token)
    with pytest.raises(Unauthenticated):
        do_refresh(session_factory, settings, pair.refresh_token)
    with pytest.raises(Unauthenticated, match="invalid email or password"):
        do_login(session_factory, settings, "ada@example.org")
    assert audit_rows(session_factory, "auth.login")[-1].detail["reason"] == "inactive"
    assert audit_rows(session_factory, "user.deactivate")[0].actor == "admin-1"

    with transaction(session_factory) as session:
        set_active(session, user_id=user_id, active=True)
    assert do_login(session_factory, settings, "ada@example.org").access_token


# --- refresh ---------------------------------------------------------------------------


def test_refresh_rotates_and_reuse_revokes_the_whole_family(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    make_user(session_factory)
    first = do_login(session_factory, settings, "ada@example.org")
    other_device = do_login(session_factory, settings, "ada@example.org")

    second = do_refresh(session_factory, settings, first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    third = do_refresh(session_factory, settings, second.refresh_token)

    # the first token is replayed (stolen): refused, and the family is revoked
    with pytest.raises(Unauthenticated):
        do_refresh(session_factory, settings, first.refresh_token)
    with pytest.raises(Unauthenticated):
        do_refresh(session_factory, settings, third.refresh_token)
    reuse = audit_rows(session_factory, "auth.refresh_reuse")
    assert len(reuse) == 1 and reuse[0].outcome == "refused"
    assert reuse[0].detail["family_revoked"] is True

    # another login (another family) is not affected
    assert do_refresh(session_factory, settings, other_device.refresh_token).access_token


def test_logout_revokes_the_refresh_token_and_unknown_tokens_are_refused(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    make_user(session_factory)
    pair = do_login(session_factory, settings, "ada@example.org")
    with transaction(session_factory) as session:
        logout(session, pair.refresh_token)
        logout(session, "never-issued")
    with pytest.raises(Unauthenticated):
        do_refresh(session_factory, settings, pair.refresh_token)
    with pytest.raises(Unauthenticated):
        do_refresh(session_factory, settings, "never-issued")


def test_an_expired_refresh_token_is_refused(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    make_user(session_factory)
    pair = do_login(session_factory, settings, "ada@example.org")
    with transaction(session_factory) as session:
        session.execute(
            update(RefreshTokenRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with pytest.raises(Unauthenticated):
        do_refresh(session_factory, settings, pair.refresh_token)


# --- rate limit ------------------------------------------------------------------------


def test_too_many_failures_refuse_even_the_right_password_until_the_window_passes(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    make_user(session_factory)
    for _ in range(settings.login_attempts_per_window):
        with pytest.raises(Unauthenticated):
            do_login(session_factory, settings, "ada@example.org", "Wrong-password-1")
    with pytest.raises(RateLimited) as limited:
        do_login(session_factory, settings, "ADA@example.org", PASSWORD)
    assert 0 < limited.value.retry_after <= settings.login_window_seconds
    assert "try again in" in str(limited.value)
    assert audit_rows(session_factory, "auth.login")[-1].detail["reason"] == "rate_limited"

    # the failures leave the window: the right password works and clears the count
    with transaction(session_factory) as session:
        past = datetime.now(UTC) - timedelta(seconds=settings.login_window_seconds + 1)
        session.execute(update(LoginAttemptRow).values(at=past))
    assert do_login(session_factory, settings, "ada@example.org").access_token
    with transaction(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(LoginAttemptRow)) == 0


def test_the_rate_limit_gives_no_hint_whether_an_email_exists(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    for _ in range(settings.login_attempts_per_window):
        with pytest.raises(Unauthenticated):
            do_login(session_factory, settings, "ghost@example.org", "Wrong-password-1")
    with pytest.raises(RateLimited):
        do_login(session_factory, settings, "ghost@example.org", "Wrong-password-1")


# --- users and the first admin ---------------------------------------------------------


def test_bootstrap_admin_works_once_and_only_with_the_secret(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with pytest.raises(Unauthenticated):
        with transaction(session_factory) as session:
            bootstrap_admin(
                session, settings, secret="guess", email="eve@example.org", password=PASSWORD
            )
    with transaction(session_factory) as session:
        admin_id = bootstrap_admin(
            session, settings, secret=BOOT_SECRET, email="root@example.org", password=PASSWORD
        )
    with pytest.raises(Forbidden, match="already exists"):
        with transaction(session_factory) as session:
            bootstrap_admin(
                session, settings, secret=BOOT_SECRET, email="two@example.org", password=PASSWORD
            )

    with transaction(session_factory) as session:
        admins = list(session.scalars(select(UserRow).where(UserRow.is_admin.is_(True))))
    assert [a.id for a in admins] == [admin_id]
    rows = audit_rows(session_factory, "auth.bootstrap_admin")
    assert [(r.outcome, r.detail.get("reason")) for r in rows] == [
        ("refused", "bad_secret"),
        ("ok", None),
        ("refused", "admin_exists"),
    ]
    actor = actor_of(
        session_factory,
        settings,
        do_login(session_factory, settings, "root@example.org").access_token,
    )
    assert actor.is_admin


def test_bootstrap_needs_a_configured_strong_secret(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    for configured, error in ((None, Forbidden), ("changeme", InvalidInput)):
        s = settings.model_copy(update={"bootstrap_admin_secret": configured})
        with pytest.raises(error):
            with transaction(session_factory) as session:
                bootstrap_admin(
                    session, s, secret="changeme", email="eve@example.org", password=PASSWORD
                )
    with transaction(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(UserRow)) == 0


def test_create_user_reports_every_problem_with_its_field(
    session_factory: sessionmaker[Session],
) -> None:
    make_user(session_factory)
    with pytest.raises(InvalidInput) as info:
        make_user(session_factory, "ADA@example.org")
    assert [(e.path, e.message) for e in info.value.errors] == [("email", "already registered")]
    with pytest.raises(InvalidInput) as info:
        with transaction(session_factory) as session:
            create_user(session, email="not-an-email", password="short")
    assert {e.path for e in info.value.errors} == {"email", "password"}


def test_memberships_link_faculty_and_residents_to_their_person(
    session_factory: sessionmaker[Session], fernet_keys: list[str]
) -> None:
    ada, bob = make_user(session_factory), make_user(session_factory, "bob@example.org")
    with transaction(session_factory) as session:
        add_program(session)
        add_program(session, "other")
        add_person(session, "r1")
        add_person(session, "f1", kind="faculty")
        add_person(session, "x1", program_id="other")

    def refused(**kwargs: Any) -> list[str]:
        with pytest.raises(InvalidInput) as info:
            with transaction(session_factory) as session:
                add_membership(session, **kwargs)
        return [f"{e.path}: {e.message}" for e in info.value.errors]

    assert refused(user_id=ada, program_id=PROGRAM, role="resident") == [
        "person_id: a resident membership needs the person they are"
    ]
    assert (
        "no person 'x1'"
        in refused(user_id=ada, program_id=PROGRAM, role="resident", person_id="x1")[0]
    )
    assert (
        "is faculty, not resident"
        in refused(user_id=ada, program_id=PROGRAM, role="resident", person_id="f1")[0]
    )
    assert refused(user_id=ada, program_id=PROGRAM, role="admin")[0].startswith("role:")

    with transaction(session_factory) as session:
        add_membership(session, user_id=ada, program_id=PROGRAM, role="resident", person_id="r1")
        add_membership(session, user_id=bob, program_id=PROGRAM, role=Role.COORDINATOR)
    assert (
        "already linked to another user"
        in refused(user_id=bob, program_id=PROGRAM, role="resident", person_id="r1")[0]
    )


# --- field encryption ------------------------------------------------------------------


def test_encrypted_fields_hold_no_plaintext_in_the_database(
    session_factory: sessionmaker[Session], db_engine: Engine, fernet_keys: list[str]
) -> None:
    with transaction(session_factory) as session:
        add_program(session)
        add_person(session, "r1", military_status="Army Reserve", accommodation_notes="Lift only")
        add_absence(session, "a1", "r1", "parental")

    plaintexts = [b"Army Reserve", b"Lift only", b"parental"]
    with db_engine.connect() as conn:
        raw = conn.execute(
            text(
                "SELECT p.military_status, p.accommodation_notes, a.leave_type "
                "FROM people p JOIN absences a ON a.person_id = p.id"
            )
        ).one()
        dumps: list[str] = []
        if db_engine.dialect.name == "postgresql":
            # the whole rows as PostgreSQL prints them, and the columns as text
            dumps.append(conn.execute(text("SELECT p::text FROM people p")).scalar_one())
            dumps.append(conn.execute(text("SELECT a::text FROM absences a")).scalar_one())
            dumps.append(
                conn.execute(
                    text(
                        "SELECT encode(military_status, 'escape') || "
                        "encode(accommodation_notes, 'escape') FROM people"
                    )
                ).scalar_one()
            )
            column_type = conn.execute(
                text(
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_name = 'people' AND column_name = 'military_status'"
                )
            ).scalar_one()
            assert column_type == "bytea"
    tokens = [bytes(v) for v in raw]
    for token, plain in zip(tokens, plaintexts, strict=True):
        assert plain not in token
        assert plain.hex() not in token.hex()
        assert token.startswith(b"gAAAAA")  # a Fernet token
        assert Fernet(fernet_keys[0].encode()).decrypt(token) == plain
    for dump in dumps:
        for plain in plaintexts:
            assert plain.decode() not in dump
            assert plain.hex() not in dump
    with transaction(session_factory) as session:
        person = session.get(PersonRow, (PROGRAM, "r1"))
        absence = session.get(AbsenceRow, (PROGRAM, "a1"))
        assert person is not None and absence is not None
        assert person.military_status == "Army Reserve"
        assert absence.leave_type == "parental"


def _seed_encrypted(factory: sessionmaker[Session], people: int) -> dict[str, tuple[Any, ...]]:
    expected: dict[str, tuple[Any, ...]] = {}
    with transaction(factory) as session:
        add_program(session)
        for i in range(people):
            pid = f"r{i:03d}"
            notes = None if i % 3 == 0 else f"notes {i}"
            add_person(session, pid, military_status=f"Reserve {i}", accommodation_notes=notes)
            add_absence(session, f"a{i:03d}", pid, "parental" if i % 2 else "medical")
            expected[pid] = (f"Reserve {i}", notes, "parental" if i % 2 else "medical")
    return expected


def _read_all(factory: sessionmaker[Session]) -> dict[str, tuple[Any, ...]]:
    with transaction(factory) as session:
        people = {p.id: p for p in session.scalars(select(PersonRow))}
        absences = {a.person_id: a for a in session.scalars(select(AbsenceRow))}
    return {
        pid: (p.military_status, p.accommodation_notes, absences[pid].leave_type)
        for pid, p in people.items()
    }


def _tokens(engine: Engine) -> list[bytes]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT military_status FROM people UNION ALL "
                "SELECT accommodation_notes FROM people UNION ALL SELECT leave_type FROM absences"
            )
        ).scalars()
        return [bytes(v) for v in rows if v is not None]


def _under(key: str, tokens: list[bytes]) -> int:
    fernet = Fernet(key.encode())
    count = 0
    for token in tokens:
        try:
            fernet.decrypt(token)
        except Exception:
            continue
        count += 1
    return count


def test_rotation_leaves_every_row_readable_with_only_the_new_key(
    session_factory: sessionmaker[Session], db_engine: Engine, fernet_keys: list[str]
) -> None:
    old = fernet_keys[0]
    expected = _seed_encrypted(session_factory, 11)
    values = len(_tokens(db_engine))
    assert values == 11 + 7 + 11  # notes are empty for every third person

    new = new_key()
    install_keys([new, old])
    report = rotate_keys(session_factory, batch=4)
    assert report.rows_scanned == 22
    assert report.values_rotated == values and report.values_current == 0
    assert report.rotated_by_column == {
        "people.military_status": 11,
        "people.accommodation_notes": 7,
        "absences.leave_type": 11,
    }
    tokens = _tokens(db_engine)
    assert _under(new, tokens) == values and _under(old, tokens) == 0

    install_keys([new])
    assert _read_all(session_factory) == expected
    install_keys([old])
    with pytest.raises(KeyringMissing):
        _read_all(session_factory)


class Interrupted(Exception):
    pass


def test_an_interrupted_rotation_resumes_where_it_stopped(
    session_factory: sessionmaker[Session], db_engine: Engine, fernet_keys: list[str]
) -> None:
    old = fernet_keys[0]
    expected = _seed_encrypted(session_factory, 10)
    values = len(_tokens(db_engine))
    new = new_key()
    install_keys([new, old])

    def stop_after_first_batch(table: str, report: Any) -> None:
        raise Interrupted(table)

    with pytest.raises(Interrupted):
        rotate_keys(session_factory, batch=4, on_progress=stop_after_first_batch)
    done = _under(new, _tokens(db_engine))
    # the first batch (four people, two of them with notes) was committed
    assert done == 4 + 2
    assert _under(old, _tokens(db_engine)) == values - done

    report = rotate_keys(session_factory, batch=4)
    assert report.values_current == done
    assert report.values_rotated == values - done
    install_keys([new])
    assert _read_all(session_factory) == expected

    again = rotate_keys(session_factory, batch=4)
    assert again.values_rotated == 0 and again.values_current == values


def test_rotation_stops_on_a_value_no_installed_key_can_read(
    session_factory: sessionmaker[Session], fernet_keys: list[str]
) -> None:
    _seed_encrypted(session_factory, 2)
    install_keys([new_key()])  # the key the data was written with is missing
    with pytest.raises(KeyringMissing, match=r"people .*cannot be decrypted"):
        rotate_keys(session_factory)


# --- start-up --------------------------------------------------------------------------


@pytest.fixture
def restore_keyring() -> Iterator[None]:
    saved = (KEYRING.multi, KEYRING.newest)
    yield
    KEYRING.multi, KEYRING.newest = saved


def _production(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "production",
        "data_dir": tmp_path,
        "database_url": "postgresql+psycopg://rsched@db.internal/rsched",
        "jwt_secret": JWT_SECRET,
        "encryption_keys": new_key(),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"encryption_keys": None}, "RSCHED_ENCRYPTION_KEYS"),
        ({"jwt_secret": None}, "RSCHED_JWT_SECRET"),
        ({"jwt_secret": "changeme"}, "RSCHED_JWT_SECRET"),
        ({"jwt_secret": "short-but-not-a-placeholder"}, "RSCHED_JWT_SECRET"),
        ({"jwt_algorithm": "HS512", "jwt_secret": "s" * 40}, "RSCHED_JWT_SECRET"),
        ({"encryption_keys": "not-a-fernet-key"}, "RSCHED_ENCRYPTION_KEYS[0]"),
        ({"bootstrap_admin_secret": "admin"}, "RSCHED_BOOTSTRAP_ADMIN_SECRET"),
        ({"database_url": None}, "RSCHED_DATABASE_URL"),
    ],
    ids=[
        "no-keys",
        "no-secret",
        "placeholder-secret",
        "short-secret",
        "secret-short-for-hs512",
        "bad-key",
        "weak-bootstrap",
        "sqlite",
    ],
)
def test_the_service_refuses_to_start_in_production_with_unsafe_settings(
    tmp_path: Path, restore_keyring: None, overrides: dict[str, Any], field: str
) -> None:
    KEYRING.multi, KEYRING.newest = None, None
    with pytest.raises(InvalidInput) as info:
        startup(_production(tmp_path, **overrides))
    assert field in [e.path for e in info.value.errors]
    assert KEYRING.multi is None  # nothing installed
    assert list(tmp_path.iterdir()) == []  # no dev secret or key file made


def test_the_service_starts_in_production_with_safe_settings(
    tmp_path: Path, restore_keyring: None
) -> None:
    key = new_key()
    startup(_production(tmp_path, encryption_keys=key, bootstrap_admin_secret=BOOT_SECRET))
    assert KEYRING.newest is not None
    token = KEYRING.newest.encrypt(b"x")
    assert Fernet(key.encode()).decrypt(token) == b"x"


# --- command line ----------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path) -> Iterator[None]:
    for name in ("RSCHED_ENV", "RSCHED_ENCRYPTION_KEYS", "RSCHED_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RSCHED_DATABASE_URL", db_url)
    monkeypatch.setenv("RSCHED_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_admin_create_makes_an_admin_who_can_log_in(
    cli_env: None,
    session_factory: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin", "create", "--email", "root@example.org", "--password-stdin"]) == 0
    user_id = capsys.readouterr().out.strip()
    pair = do_login(session_factory, settings, "root@example.org")
    actor = actor_of(session_factory, settings, pair.access_token)
    assert actor.user_id == user_id and actor.is_admin
    assert audit_rows(session_factory, "user.create")[0].target == user_id

    answers = iter([PASSWORD, PASSWORD + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["admin", "create", "--email", "two@example.org"]) == 2
    assert "the two entries differ" in capsys.readouterr().err


def test_cli_keys_new_and_rotate(
    cli_env: None,
    session_factory: sessionmaker[Session],
    db_engine: Engine,
    fernet_keys: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = fernet_keys[0]
    expected = _seed_encrypted(session_factory, 3)
    assert main(["keys", "new"]) == 0
    new = capsys.readouterr().out.strip()
    Fernet(new.encode())

    monkeypatch.setenv("RSCHED_ENCRYPTION_KEYS", f"{new},{old}")
    get_settings.cache_clear()
    assert main(["keys", "rotate", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "values re-encrypted: 8" in out
    assert "people.military_status: 3" in out
    tokens = _tokens(db_engine)
    assert _under(new, tokens) == len(tokens) == 8

    install_keys([new])
    assert _read_all(session_factory) == expected
