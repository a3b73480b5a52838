"""`alignd openapi`: the API contract as YAML, generated from the app.

openapi/openapi.yaml is this output, checked in; tests/test_openapi.py fails when the two differ.
Regenerate with `alignd openapi --out openapi/openapi.yaml` (or `python -m alignd.openapi --out ...`).
"""

import argparse
import sys
from pathlib import Path

import yaml

from alignd.app import create_app
from alignd.config import Settings

SPEC_FILE = Path("openapi/openapi.yaml")
REGENERATE = f"alignd openapi --out {SPEC_FILE}"


def render() -> str:
    """The app's OpenAPI document as YAML, in the order FastAPI builds it (stable across runs)."""
    spec = create_app(Settings()).openapi()
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=110)


def write(out: Path | None) -> None:
    text = render()
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alignd.openapi", description=__doc__)
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    write(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
