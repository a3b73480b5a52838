"""API tests run the real app (TestClient) on SQLite and on Postgres, with the local store."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alignd.app import create_app
from alignd.config import Settings
from tests.api.helpers import ADMIN_KEY, new_project_key, register_model, upload_rows
from tests.db.conftest import backend, db_url, postgres
from tests.trainer.conftest import rule_data

__all__ = ["backend", "db_url", "postgres", "rule_data"]


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "alignd",
        database_url=db_url,
        admin_key=ADMIN_KEY,
        public_url="http://testserver",
        run_controller=False,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def key(client: TestClient) -> str:
    return new_project_key(client, "team-a")


@pytest.fixture
def model_id(client: TestClient, tmp_path: Path) -> str:
    return register_model(client, tmp_path)


@pytest.fixture
def file_id(client: TestClient, key: str) -> str:
    return upload_rows(client, key)
