"""Encrypted columns: a SQLAlchemy type that stores Fernet tokens, decrypts with any key
of the list and encrypts with the newest. Keys come from settings; the process-wide
keyring is installed once at start-up (``install_keys``)."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from rsched.domain.errors import FieldError, InvalidInput, RschedError


class KeyringMissing(RschedError):
    """Encrypted data was touched before any key was installed."""


class _Keyring:
    def __init__(self) -> None:
        self.multi: MultiFernet | None = None
        self.newest: Fernet | None = None

    def install(self, keys: list[str]) -> None:
        if not keys:
            raise InvalidInput(FieldError("RSCHED_ENCRYPTION_KEYS", "at least one key is needed"))
        try:
            fernets = [Fernet(k.strip().encode()) for k in keys]
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                FieldError("RSCHED_ENCRYPTION_KEYS", f"not a Fernet key: {exc}")
            ) from None
        self.multi = MultiFernet(fernets)
        self.newest = fernets[0]

    def get(self) -> MultiFernet:
        if self.multi is None:
            raise KeyringMissing("no encryption keys installed")
        return self.multi


KEYRING = _Keyring()


def install_keys(keys: list[str]) -> None:
    KEYRING.install(keys)


def parse_keys(value: str) -> list[str]:
    return [k.strip() for k in value.split(",") if k.strip()]


def new_key() -> str:
    return Fernet.generate_key().decode()


class EncryptedText(TypeDecorator[str]):
    """Text encrypted at rest (bytes in the database; no plaintext ever stored)."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        return KEYRING.get().encrypt(str(value).encode("utf-8"))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        try:
            return KEYRING.get().decrypt(bytes(value)).decode("utf-8")
        except InvalidToken:
            raise KeyringMissing(
                "an encrypted field cannot be read with the installed keys"
            ) from None


def rotate_token(token: bytes) -> bytes:
    """Re-encrypt one stored token with the newest key."""
    return KEYRING.get().rotate(token)


def encrypted_with_newest(token: bytes) -> bool:
    newest = KEYRING.newest
    if newest is None:
        raise KeyringMissing("no encryption keys installed")
    try:
        newest.decrypt(token)
    except InvalidToken:
        return False
    return True
