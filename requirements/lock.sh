#!/usr/bin/env bash
# Refreshes the lock files in this folder from pyproject.toml: `make lock` (it installs the pinned uv).
#
#   dev.lock           .[dev,server,trainer,integrations]  `make install` / `make test` / CI (.ci/run)
#   demo.lock          .[server,trainer]                   `make demo`
#   server-image.lock  .[server,integrations]              Dockerfile (the API server image)
#   trainer-image.lock .[trainer], torch left out          trainer_image/Dockerfile
#
# None of them pins torch. dev.lock and demo.lock are resolved for Python 3.11 on the machine that runs
# this (Linux x86_64, the developers' and CI's kind), picking the wheels pip picks there, with the CPU
# wheel torch==2.13.0+cpu, so they pin torch's own dependencies as that wheel needs them and nothing of
# CUDA's; the Makefile installs torch==2.13.0 first, then the lock. The image locks are universal
# (any Python >= 3.11, amd64 and arm64): the server image has no torch, and the trainer image keeps the
# CUDA torch of its base image, so torch is dropped from that resolution altogether.
#
# uv resolves against the indexes pip is configured with (`pip config`, PIP_FIND_LINKS), so a lock pins
# what `pip install` would find on this machine; set UV_* variables to add more. A lock's current pins
# are kept where they still fit; `make lock LOCK_ARGS=--upgrade` (arguments go to `uv pip compile`)
# moves everything to the newest versions that do.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
PYTHON=${PYTHON:-python3}
args=("$@")

sources=()
for index in $("$PYTHON" -m pip config get global.extra-index-url 2>/dev/null || true); do
    sources+=(--extra-index-url "$index")
done
for links in ${PIP_FIND_LINKS:-} $("$PYTHON" -m pip config get global.find-links 2>/dev/null || true); do
    sources+=(--find-links "$links")
done

compile() {
    local out=$1
    shift
    "$UV" pip compile pyproject.toml --quiet --python-version 3.11 --index-strategy unsafe-best-match \
        --no-emit-package torch --custom-compile-command "make lock" "${sources[@]}" "${args[@]}" "$@" \
        -o "requirements/$out"
}

cpu_torch=$(mktemp)
no_torch=$(mktemp)
trap 'rm -f "$cpu_torch" "$no_torch"' EXIT
echo "torch==2.13.0+cpu" >"$cpu_torch"
echo "torch ; sys_platform == 'never'" >"$no_torch"

compile dev.lock --constraint "$cpu_torch" \
    --extra dev --extra server --extra trainer --extra integrations
compile demo.lock --constraint "$cpu_torch" \
    --extra server --extra trainer
compile server-image.lock --universal --extra server --extra integrations
compile trainer-image.lock --universal --override "$no_torch" --extra trainer

# The override leaves torch and its own dependencies behind with a marker that never holds; drop them.
"$PYTHON" - requirements/*.lock <<'EOF'
import re
import sys

for path in sys.argv[1:]:
    with open(path) as file:
        blocks = re.split(r"\n(?=\S)", file.read())
    kept = [block for block in blocks if "sys_platform == 'never'" not in block.partition("\n")[0]]
    text = "\n".join(kept)
    with open(path, "w") as file:
        file.write(text if text.endswith("\n") else text + "\n")
EOF
