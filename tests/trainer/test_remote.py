"""alignd_trainer/remote.py: what a trainer does with a base model kept in object storage (the download
itself, from real presigned URLs, is in tests/api/test_models.py and tests/api/test_e2e_s3.py)."""

from pathlib import Path

import pytest

from alignd.contract import JobSpec, ModelFile, ModelFilesResponse
from alignd_trainer.errors import BadInputError, InfrastructureError
from alignd_trainer.remote import download_model, localize_model, model_cache_root


def test_a_local_model_is_loaded_where_it_is(tmp_path: Path) -> None:
    spec = JobSpec(model="/models/tiny", training_file="train.jsonl")
    assert localize_model(spec, None, tmp_path) is spec


def test_an_offline_run_cannot_download_an_s3_model(tmp_path: Path) -> None:
    spec = JobSpec(model="s3://models/tiny", training_file="train.jsonl")
    with pytest.raises(BadInputError, match=r"only a managed run can download.*set 'model' to its directory"):
        localize_model(spec, None, tmp_path)


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a//b", "a/./b"])
def test_unsafe_file_paths_are_refused(tmp_path: Path, path: str) -> None:
    listing = ModelFilesResponse(
        location="s3://models/tiny", files=[ModelFile(path=path, url="http://127.0.0.1:9/x", size=1)]
    )
    with pytest.raises(InfrastructureError, match="unsafe path"):
        download_model(listing, tmp_path)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_the_cache_follows_xdg_cache_home(tmp_path: Path) -> None:
    assert model_cache_root({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "alignd" / "models"
    assert model_cache_root({}) == Path.home() / ".cache" / "alignd" / "models"
