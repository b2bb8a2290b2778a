from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from wharf_api import create_app
from wharf_api.settings import ApiSettings
from wharf_common.db import get_session


@pytest.fixture(scope="session")
def api_settings(connection_settings: Callable[[str], dict[str, object]]) -> ApiSettings:
    return ApiSettings(**connection_settings("api"))


@pytest.fixture(scope="session")
def migrated_app(api_settings: ApiSettings) -> Flask:
    app = create_app(api_settings)
    assert app.test_cli_runner().invoke(args=["db", "upgrade"]).exit_code == 0
    return app


@pytest.fixture
def app(migrated_app: Flask) -> Iterator[Flask]:
    yield migrated_app
    with migrated_app.app_context():
        session = get_session()
        session.execute(text("TRUNCATE api.users"))
        session.commit()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
