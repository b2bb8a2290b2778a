"""Fetch Swagger UI's static files for /docs (nginx image build stage).

Downloads the pinned ``swagger-ui-dist`` tarball from the npm registry, refuses it unless its
SHA-512 is the pinned one (the registry's ``integrity`` value), and writes only the files the page
uses, each with a gzip copy for nginx's ``gzip_static``. Usage: ``fetch_swagger_ui.py OUT_DIR``
with ``SWAGGER_UI_VERSION``, ``SWAGGER_UI_SHA512`` and ``NPM_REGISTRY`` in the environment.
A TLS-intercepting proxy's CA comes in through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

# What /docs/index.html loads, and the licence that must travel with it.
WANTED = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-16x16.png",
    "favicon-32x32.png",
    "LICENSE",
    "NOTICE",
)
COMPRESSED = (".css", ".js")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - https URL built from settings
        return response.read()


def main(out: Path) -> None:
    version = os.environ["SWAGGER_UI_VERSION"]
    expected = os.environ["SWAGGER_UI_SHA512"]
    registry = os.environ.get("NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")
    url = f"{registry}/swagger-ui-dist/-/swagger-ui-dist-{version}.tgz"
    tarball = fetch(url)
    actual = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if actual != expected:
        sys.exit(f"swagger-ui-dist {version}: checksum mismatch (got {actual}, pinned {expected})")
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for name in WANTED:
            member = archive.extractfile(f"package/{name}")
            if member is None:
                sys.exit(f"swagger-ui-dist {version}: {name} is missing")
            data = member.read()
            (out / name).write_bytes(data)
            if name.endswith(COMPRESSED):
                (out / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    print(f"swagger-ui-dist {version}: {len(WANTED)} files in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
