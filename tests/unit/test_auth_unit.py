"""Auth without a database: password policy and hashing, access tokens (pinned
algorithm, expiry, type), and where secrets and encryption keys come from."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.fernet import Fernet
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from rsched.config import Settings
from rsched.crypto.fields import new_key
from rsched.domain.errors import InvalidInput
from rsched.services.access import Unauthenticated
from rsched.services.auth import (
    DEV_KEY_FILE,
    decode_access_token,
    encryption_keys,
    hash_password,
    issue_access_token,
    jwt_secret,
    verify_password,
)
from rsched.services.users import email_problems, password_problems

SECRET = "k7QeR2vX9pLm4TzW8sYb1NcJ6hGd3FaU5oEi0rKq-Zx8Vn2Bm4Lp6Qw1Er3Ty5Ui7Op9As"


def settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"env": "development", "jwt_secret": SECRET, "data_dir": tmp_path}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def messages(errors: list[object]) -> str:
    return " | ".join(str(e) for e in errors)


# --- password policy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("Sh0rt-pw", "at least 12 characters"),
        ("alllowercaseletters", "two kinds of characters"),
        ("123456789012345", "two kinds of characters"),
        ("ALLUPPERCASEONLY", "two kinds of characters"),
        ("ada.lovelace@example.org", "must not be the email address"),
        ("Ada.Lovelace", "must not be the email address"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason(password: str, expected: str) -> None:
    problems = password_problems(password, email="Ada.Lovelace@example.org")
    assert problems, password
    assert all(p.path == "password" for p in problems)
    assert expected in messages(list(problems))


def test_a_reasonable_password_passes() -> None:
    assert password_problems("correct horse 42", email="ada@example.org") == []
    assert password_problems("Tr0ubadour&3x", email="ada@example.org") == []


@pytest.mark.parametrize("email", ["ada", "ada@", "@example.org", "ada@example", "a b@x.org"])
def test_malformed_emails_are_refused(email: str) -> None:
    problems = email_problems(email)
    assert [p.path for p in problems] == ["email"]


def test_email_is_accepted_case_insensitively() -> None:
    assert email_problems("  Ada@Example.ORG ") == []


# --- password hashing ------------------------------------------------------------------


def test_password_hash_is_argon2_and_verifies() -> None:
    stored = hash_password("Tr0ubadour&3x")
    assert stored.startswith("$argon2id$")
    assert "Tr0ubadour" not in stored
    assert verify_password("Tr0ubadour&3x", stored) == (True, None)
    assert verify_password("tr0ubadour&3x", stored) == (False, None)


def test_outdated_hash_parameters_are_upgraded_on_verify() -> None:
    weak = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8 * 1024),))
    stored = weak.hash("Tr0ubadour&3x")
    ok, new_hash = verify_password("Tr0ubadour&3x", stored)
    assert ok
    assert new_hash is not None and new_hash != stored
    assert verify_password("Tr0ubadour&3x", new_hash) == (True, None)


def test_an_unreadable_stored_hash_never_matches() -> None:
    assert verify_password("anything", "plain-text-password") == (False, None)


# --- access tokens ---------------------------------------------------------------------


def _claims(**overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": "u1",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": "j1",
        "typ": "access",
    }
    claims.update(overrides)
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_access_token_round_trip_has_the_expected_claims(tmp_path: Path) -> None:
    s = settings(tmp_path)
    claims = decode_access_token(s, issue_access_token(s, "user-1"))
    assert claims["sub"] == "user-1"
    assert claims["typ"] == "access"
    assert claims["exp"] - claims["iat"] == s.access_token_minutes * 60
    assert claims["jti"]
    header = jwt.get_unverified_header(issue_access_token(s, "user-1"))
    assert header["alg"] == "HS256"


def test_two_tokens_have_different_ids(tmp_path: Path) -> None:
    s = settings(tmp_path)
    a = decode_access_token(s, issue_access_token(s, "u"))
    b = decode_access_token(s, issue_access_token(s, "u"))
    assert a["jti"] != b["jti"]


@pytest.mark.parametrize("other", ["HS384", "HS512"])
def test_a_token_signed_with_another_algorithm_is_refused(tmp_path: Path, other: str) -> None:
    s = settings(tmp_path)  # pinned to HS256
    token = jwt.encode(_claims(), SECRET, algorithm=other)
    with pytest.raises(Unauthenticated, match="invalid access token"):
        decode_access_token(s, token)


def test_the_pinned_algorithm_follows_settings(tmp_path: Path) -> None:
    s = settings(tmp_path, jwt_algorithm="HS512")
    assert jwt.get_unverified_header(issue_access_token(s, "u"))["alg"] == "HS512"
    assert decode_access_token(s, jwt.encode(_claims(), SECRET, algorithm="HS512"))["sub"] == "u1"
    with pytest.raises(Unauthenticated):
        decode_access_token(s, jwt.encode(_claims(), SECRET, algorithm="HS256"))


def test_an_unsigned_none_token_is_refused(tmp_path: Path) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}.{_b64(b'x' * 32)}"):
        with pytest.raises(Unauthenticated):
            decode_access_token(settings(tmp_path), token)


def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path)
    token = issue_access_token(s, "u", now=datetime.now(UTC) - timedelta(minutes=16))
    with pytest.raises(Unauthenticated, match="expired"):
        decode_access_token(s, token)


def test_a_token_just_issued_before_its_expiry_is_accepted(tmp_path: Path) -> None:
    s = settings(tmp_path)
    token = issue_access_token(s, "u", now=datetime.now(UTC) - timedelta(minutes=14))
    assert decode_access_token(s, token)["sub"] == "u"


@pytest.mark.parametrize(
    "claims",
    [
        _claims(typ="refresh"),
        {k: v for k, v in _claims().items() if k != "jti"},
        {k: v for k, v in _claims().items() if k != "exp"},
        {k: v for k, v in _claims().items() if k != "typ"},
    ],
    ids=["wrong-typ", "no-jti", "no-exp", "no-typ"],
)
def test_tokens_of_the_wrong_kind_or_missing_claims_are_refused(
    tmp_path: Path, claims: dict[str, object]
) -> None:
    with pytest.raises(Unauthenticated):
        decode_access_token(settings(tmp_path), jwt.encode(claims, SECRET, algorithm="HS256"))


def test_a_token_signed_with_another_secret_or_tampered_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with pytest.raises(Unauthenticated):
        decode_access_token(s, jwt.encode(_claims(), "x" * 64, algorithm="HS256"))
    header, _payload, signature = issue_access_token(s, "u1").split(".")
    forged = _b64(json.dumps(_claims(sub="admin")).encode())
    with pytest.raises(Unauthenticated):
        decode_access_token(s, f"{header}.{forged}.{signature}")
    with pytest.raises(Unauthenticated):
        decode_access_token(s, "not-a-token")


# --- secrets and keys ------------------------------------------------------------------


def test_jwt_secret_in_development_is_per_install_and_stable(tmp_path: Path) -> None:
    a = jwt_secret(settings(tmp_path, jwt_secret=None))
    b = jwt_secret(settings(tmp_path, jwt_secret=None))
    other = jwt_secret(settings(tmp_path / "other", jwt_secret=None))
    assert a == b and a != other and len(a) >= 32


def test_jwt_secret_is_required_outside_development(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="RSCHED_JWT_SECRET"):
        jwt_secret(settings(tmp_path, env="production", jwt_secret=None))


def test_development_encryption_key_is_made_once_and_kept(tmp_path: Path) -> None:
    first = encryption_keys(settings(tmp_path))
    again = encryption_keys(settings(tmp_path))
    assert first == again and len(first) == 1
    Fernet(first[0].encode())  # a real key
    key_file = tmp_path / DEV_KEY_FILE
    assert key_file.read_text().strip() == first[0]
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert list(tmp_path.iterdir()) == [key_file]  # no temporary file left behind


def test_configured_keys_are_parsed_newest_first(tmp_path: Path) -> None:
    new, old = new_key(), new_key()
    keys = encryption_keys(settings(tmp_path, encryption_keys=f" {new} , {old},"))
    assert keys == [new, old]
    assert not (tmp_path / DEV_KEY_FILE).exists()


def test_bad_configured_keys_are_refused_by_position(tmp_path: Path) -> None:
    good = new_key()
    with pytest.raises(InvalidInput) as info:
        encryption_keys(settings(tmp_path, encryption_keys=f"{good},not-a-key,{good}"))
    paths = [e.path for e in info.value.errors]
    assert paths == ["RSCHED_ENCRYPTION_KEYS[1]", "RSCHED_ENCRYPTION_KEYS[2]"]
    assert "not-a-key" not in str(info.value)


def test_keys_are_required_and_real_outside_development(tmp_path: Path) -> None:
    prod = {"env": "production"}
    with pytest.raises(InvalidInput, match="never an ephemeral key"):
        encryption_keys(settings(tmp_path, **prod))
    assert not (tmp_path / DEV_KEY_FILE).exists()
    zeros = base64.urlsafe_b64encode(bytes(32)).decode()
    with pytest.raises(InvalidInput, match="placeholder key"):
        encryption_keys(settings(tmp_path, encryption_keys=zeros, **prod))
