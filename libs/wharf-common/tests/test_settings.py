from __future__ import annotations

from pathlib import Path

import pytest

from wharf_common.settings import CONFIG_ERROR_EXIT_CODE, CommonSettings, load_settings

VALID = {"SERVICE_NAME": "svc", "DATABASE_URL": "postgresql://u@db:5432/x", "REDIS_URL": "redis://r:6379/0"}


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for key in (*VALID, "DATABASE_PASSWORD", "DATABASE_PASSWORD_FILE", "DB_POOL_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)


def test_valid_environment_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, **VALID, DB_POOL_SIZE="7")
    settings = load_settings(CommonSettings)
    assert settings.db_pool_size == 7
    assert str(settings.redis_url) == "redis://r:6379/0"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://u@db/x"}, "DATABASE_URL"),
        ({"DB_POOL_SIZE": "lots"}, "DB_POOL_SIZE"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
    ],
)
def test_malformed_setting_exits_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], override: dict[str, str], named: str
) -> None:
    _env(monkeypatch, **{**VALID, **override})
    with pytest.raises(SystemExit) as exit_info:
        load_settings(CommonSettings)
    assert exit_info.value.code == CONFIG_ERROR_EXIT_CODE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("configuration error: ")
    assert named in lines[0]


def test_missing_setting_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _env(monkeypatch, SERVICE_NAME="svc", REDIS_URL="redis://r:6379/0")
    with pytest.raises(SystemExit):
        load_settings(CommonSettings)
    assert "DATABASE_URL: Field required" in capsys.readouterr().err


def test_secret_comes_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    _env(monkeypatch, **VALID, DATABASE_PASSWORD_FILE=str(secret))
    settings = load_settings(CommonSettings)
    assert settings.database_password is not None
    assert settings.database_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_unreadable_secret_file_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _env(monkeypatch, **VALID, DATABASE_PASSWORD_FILE="/nonexistent/pw")
    with pytest.raises(SystemExit):
        load_settings(CommonSettings)
    assert "DATABASE_PASSWORD_FILE: cannot read /nonexistent/pw" in capsys.readouterr().err
