"""Settings from the environment: the backup and webhook settings (defaults, parsing, a bad
value refused with its variable named, by ``get_settings`` and by the command line without
a traceback), and where their values go."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from rsched.cli.main import main as cli
from rsched.config import Settings, get_settings
from rsched.domain import InvalidInput
from rsched.services.backups import service_for
from rsched.worker.maintenance import Housekeeping

VARIABLES = ("RSCHED_BACKUP_MAX_AGE_MINUTES", "RSCHED_BACKUP_ENCRYPT", "RSCHED_WEBHOOKS")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """The environment, without the variables under test (``get_settings`` uncached)."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RSCHED_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def settings_with(env: pytest.MonkeyPatch, name: str, value: str) -> Settings:
    env.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()


def test_the_defaults(env: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    assert settings.backup_max_age == timedelta(minutes=120)
    assert settings.backup_encrypt is False
    assert settings.webhooks == ()


@pytest.mark.parametrize(
    ("raw", "minutes"), [("10", 10), (" 7.5 ", 7.5), ("525600", 525600), ("", 120), (" ", 120)]
)
def test_backup_max_age_minutes(env: pytest.MonkeyPatch, raw: str, minutes: float) -> None:
    settings = settings_with(env, "RSCHED_BACKUP_MAX_AGE_MINUTES", raw)
    assert settings.backup_max_age == timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("raw", "on"),
    [
        ("1", True),
        ("true", True),
        (" YES ", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("", False),
    ],
)
def test_backup_encrypt(env: pytest.MonkeyPatch, raw: str, on: bool) -> None:
    assert settings_with(env, "RSCHED_BACKUP_ENCRYPT", raw).backup_encrypt is on


def test_webhooks_are_split_on_commas_and_trimmed(env: pytest.MonkeyPatch) -> None:
    raw = " https://a.example/h , slack+https://hooks.slack/x,"
    settings = settings_with(env, "RSCHED_WEBHOOKS", raw)
    assert settings.webhooks == ("https://a.example/h", "slack+https://hooks.slack/x")
    assert settings_with(env, "RSCHED_WEBHOOKS", " , ").webhooks == ()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("RSCHED_BACKUP_MAX_AGE_MINUTES", "abc"),
        ("RSCHED_BACKUP_MAX_AGE_MINUTES", "0"),
        ("RSCHED_BACKUP_MAX_AGE_MINUTES", "-5"),
        ("RSCHED_BACKUP_MAX_AGE_MINUTES", "nan"),
        ("RSCHED_BACKUP_MAX_AGE_MINUTES", "inf"),
        ("RSCHED_BACKUP_MAX_AGE_MINUTES", "525601"),
        ("RSCHED_BACKUP_ENCRYPT", "on"),
        ("RSCHED_BACKUP_ENCRYPT", "maybe"),
        ("RSCHED_WEBHOOKS", "ftp://nope.example/secret"),
        ("RSCHED_WEBHOOKS", "https://ok.example/h,slack+ftp://nope.example/secret"),
        ("RSCHED_WEBHOOKS", "hooks.example/secret"),
    ],
)
def test_a_bad_value_is_refused_with_its_variable_named(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, raw: str
) -> None:
    env.setenv(name, raw)
    get_settings.cache_clear()
    with pytest.raises(InvalidInput) as err:
        get_settings()
    assert [e.path for e in err.value.errors] == [name]
    assert "secret" not in str(err.value)  # a webhook URL's path may be a secret
    get_settings.cache_clear()
    assert cli(["backup", "list"]) == 2  # a clear error, not a traceback
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"error: settings: 1 error(s)\n  {name}: ")
    assert "Traceback" not in stderr and "secret" not in stderr


def test_the_values_reach_the_backup_service_and_the_leader(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        backup_max_age_minutes=10,
        backup_encrypt=True,
        webhooks=("https://a.example/h", "slack+https://hooks.slack/x"),
    )
    with service_for(settings) as service:
        assert service.max_age == timedelta(minutes=10) and service.encrypt
    with service_for(settings, encrypt=False) as service:
        assert not service.encrypt  # the caller's choice wins over the default
    housekeeping = Housekeeping.from_settings(settings)
    assert housekeeping.webhooks == ("https://a.example/h", "slack+https://hooks.slack/x")
    assert housekeeping.backups is not None
    assert housekeeping.backups.max_age == timedelta(minutes=10)
    assert housekeeping.backups.encrypt
    housekeeping.backups.close()
