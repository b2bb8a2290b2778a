"""Production runs images by digest: a tag can be moved to other content, a digest cannot. The
release sets each digest (`kustomize edit set image NAME=IMAGE@sha256:...`, k8s/README.md)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .conftest import K8S, render

if TYPE_CHECKING:
    from .conftest import Rendering

PROD_OVERLAYS = ("prod", "prod-managed-db")
PINNED = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


def images(docs: list[dict[str, object]]) -> set[str]:
    """Every container image (init containers included) of every workload in ``docs``."""
    found = set()
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            pod = doc["spec"]["template"]["spec"]  # type: ignore[index]
            found |= {c["image"] for c in pod.get("initContainers", []) + pod["containers"]}
    return found


def not_pinned(docs: list[dict[str, object]]) -> list[str]:
    """The images that are not pinned by a sha256 digest (a tag alone, or nothing at all)."""
    return sorted(image for image in images(docs) if not PINNED.match(image))


@pytest.mark.parametrize("name", PROD_OVERLAYS)
def test_every_production_image_is_pinned_by_digest(renderings: dict[str, Rendering], name: str) -> None:
    docs = renderings[name].docs
    assert images(docs), "no image found: the check would pass on anything"
    assert not_pinned(docs) == []


def test_a_tag_only_image_in_prod_fails_the_check(kubectl: str, tmp_path: Path) -> None:
    """Guards the guard: the prod overlay with one image left at its tag is reported."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = copy / "overlays/prod/kustomization.yaml"
    text = kustomization.read_text()
    # The redis entry's digest removed: redis runs by tag (redis:8) again.
    unpinned, count = re.subn(r"(- name: redis\n\s+newTag: \"8\"\n)\s+digest: \S+\n", r"\1", text)
    assert count == 1, "the prod overlay no longer pins redis as this test expects"
    kustomization.write_text(unpinned)
    for name in PROD_OVERLAYS:
        assert not_pinned(render(kubectl, copy / "overlays" / name)) == ["redis:8"], name
