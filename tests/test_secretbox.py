"""alignd/secretbox.py: values sealed under the deployment's key open only with that key; plaintext
written before sealing reads as it is; the default key is made once, 0600, and kept."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from alignd.config import Settings
from alignd.secretbox import SEALED_PREFIX, SecretBox, SecretUnreadable, generate_key, secret_box


def test_a_sealed_value_opens_with_its_key_only() -> None:
    box = SecretBox(generate_key())
    sealed = box.seal("whsec_abc")
    assert sealed.startswith(SEALED_PREFIX) and "whsec_abc" not in sealed
    assert box.seal("whsec_abc") != sealed  # a fresh IV each time
    assert box.open(sealed) == "whsec_abc"
    with pytest.raises(SecretUnreadable, match="ALIGND_ENCRYPTION_KEY"):
        SecretBox(generate_key()).open(sealed)
    with pytest.raises(SecretUnreadable):
        box.open(sealed[:-4] + "AAAA")


def test_plaintext_from_before_sealing_reads_as_it_is() -> None:
    assert SecretBox(generate_key()).open("whsec_legacy") == "whsec_legacy"


def test_the_default_key_is_created_once_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    sealed = secret_box(settings).seal("s")
    key_file = tmp_path / "data" / "encryption.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    first_key = key_file.read_text()
    assert secret_box(Settings(data_dir=tmp_path / "data")).open(sealed) == "s"
    assert key_file.read_text() == first_key


def test_a_configured_key_is_used_and_a_malformed_one_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    monkeypatch.setenv("ALIGND_ENCRYPTION_KEY", key)
    sealed = secret_box(Settings(data_dir=tmp_path)).seal("s")
    assert SecretBox(key).open(sealed) == "s"
    assert not (tmp_path / "encryption.key").exists()
    monkeypatch.setenv("ALIGND_ENCRYPTION_KEY", "correct horse battery staple")
    with pytest.raises(ValidationError, match="32 random bytes in base64"):
        Settings(data_dir=tmp_path)
