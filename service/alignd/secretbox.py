"""Secrets kept encrypted at rest, in any text column.

A sealed value is `enc:v1:` + a Fernet token (AES-128-CBC with an HMAC-SHA256, from `cryptography`).
The prefix marks it, so a column can hold sealed values next to plaintext ones written before sealing
existed: `open` returns those as they are, and their owner seals them on its next pass.

The key is ALIGND_ENCRYPTION_KEY, or else a random key created once in data_dir/encryption.key (0600).
Processes that share a database must share the key, so a deployment with more than one machine sets it.
"""

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from alignd.config import Settings

SEALED_PREFIX = "enc:v1:"
KEY_FILE = "encryption.key"


class SecretUnreadable(ValueError):
    """A sealed value that this key cannot open (another key sealed it, or it was altered)."""


def generate_key() -> str:
    """A new key in the form ALIGND_ENCRYPTION_KEY takes: 32 random bytes, url-safe base64."""
    return Fernet.generate_key().decode()


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)


class SecretBox:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def seal(self, plaintext: str) -> str:
        return SEALED_PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, stored: str) -> str:
        """The plaintext of a sealed value; a value stored before sealing existed, as it is."""
        if not is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored.removeprefix(SEALED_PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "a stored secret cannot be decrypted with this key: was it sealed under another "
                "ALIGND_ENCRYPTION_KEY (or another data_dir/encryption.key)?"
            ) from None


def secret_box(settings: Settings) -> SecretBox:
    """The box for this deployment's key (see the module docstring)."""
    if settings.encryption_key is not None:
        return SecretBox(settings.encryption_key.get_secret_value())
    path = settings.resolved_data_dir() / KEY_FILE
    if not path.exists():
        create_key_file(path, generate_key())
    return SecretBox(path.read_text().strip())


def create_key_file(path: Path, key: str) -> None:
    """Write the key to a 0600 temp file, then hard-link it into place: the link fails if another
    process got there first, so the key is never half-written nor replaced once in use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key.encode())
        os.fsync(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.close(fd)
        os.unlink(tmp)
