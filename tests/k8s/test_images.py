"""Production runs images by digest: a tag can be moved to other content, a digest cannot
(`kustomize edit set image NAME=IMAGE@sha256:...`, k8s/README.md). Our own images get theirs from
the release that pushes them and hold an all-zero placeholder until then; the public ones (postgres,
redis) carry their real digest in git."""

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
# A digest no registry serves: an unreleased prod overlay fails to pull our images rather than run
# whatever a tag points at. Allowed for these only, which no registry holds until a release pushes
# them.
PLACEHOLDER = "sha256:" + "0" * 64
SET_BY_THE_RELEASE = {
    f"registry.example.com/wharf/{name}" for name in ("api", "auth", "nginx", "postgres", "prometheus", "alertmanager")
}


def images(docs: list[dict[str, object]]) -> set[str]:
    """Every container image (init containers included) of every workload in ``docs``."""
    found = set()
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob"):
            spec = doc["spec"]  # type: ignore[index]
            pod = (spec["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else spec)["template"]["spec"]
            found |= {c["image"] for c in pod.get("initContainers", []) + pod["containers"]}
    return found


def not_pinned(docs: list[dict[str, object]]) -> list[str]:
    """The images that are not pinned by a sha256 digest (a tag alone, or nothing at all)."""
    return sorted(image for image in images(docs) if not PINNED.match(image))


def repository(image: str) -> str:
    """``registry/name`` of ``registry/name:tag@digest`` (a registry's port is not a tag)."""
    name = image.split("@")[0]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def placeholder_not_ours(docs: list[dict[str, object]]) -> list[str]:
    """The images held at the placeholder digest that no release of ours sets: public images have a
    real one."""
    held = (image for image in images(docs) if image.endswith("@" + PLACEHOLDER))
    return sorted(image for image in held if repository(image) not in SET_BY_THE_RELEASE)


@pytest.mark.parametrize("name", PROD_OVERLAYS)
def test_every_production_image_is_pinned_by_digest(renderings: dict[str, Rendering], name: str) -> None:
    docs = renderings[name].docs
    assert images(docs), "no image found: the check would pass on anything"
    assert not_pinned(docs) == []


@pytest.mark.parametrize("name", PROD_OVERLAYS)
def test_only_our_own_images_wait_for_the_release_digest(renderings: dict[str, Rendering], name: str) -> None:
    docs = renderings[name].docs
    public = {image for image in images(docs) if repository(image) not in SET_BY_THE_RELEASE}
    assert public, "no public image found: the check would pass on anything"
    assert placeholder_not_ours(docs) == []
    # The allowance names images that exist: renamed ones would leave it matching nothing (a
    # managed database leaves wharf/postgres out).
    expected = SET_BY_THE_RELEASE - ({"registry.example.com/wharf/postgres"} if name == "prod-managed-db" else set())
    assert {repository(image) for image in images(docs)} >= expected


def prod_with_redis_entry(kubectl: str, tmp_path: Path, digest_line: str) -> dict[str, list[dict[str, object]]]:
    """Both prod overlays rendered from a copy of k8s/ whose redis entry ends in ``digest_line``
    instead of its digest."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = copy / "overlays/prod/kustomization.yaml"
    text = kustomization.read_text()
    changed, count = re.subn(r"(- name: redis\n\s+newTag: \"8\"\n)\s+digest: \S+\n", rf"\g<1>{digest_line}", text)
    assert count == 1, "the prod overlay no longer pins redis as this test expects"
    kustomization.write_text(changed)
    return {name: render(kubectl, copy / "overlays" / name) for name in PROD_OVERLAYS}


def test_a_tag_only_image_in_prod_fails_the_check(kubectl: str, tmp_path: Path) -> None:
    """Guards the guard: the prod overlay with one image left at its tag is reported."""
    # The redis entry's digest removed: redis runs by tag (redis:8) again.
    for name, docs in prod_with_redis_entry(kubectl, tmp_path, "").items():
        assert not_pinned(docs) == ["redis:8"], name


def test_a_public_image_at_the_placeholder_fails_the_check(kubectl: str, tmp_path: Path) -> None:
    """Guards the guard: the placeholder passes the digest check, so a public image left at it
    is reported by the placeholder check, by name."""
    for name, docs in prod_with_redis_entry(kubectl, tmp_path, f"    digest: {PLACEHOLDER}\n").items():
        assert not_pinned(docs) == [], name
        assert placeholder_not_ours(docs) == [f"redis:8@{PLACEHOLDER}"], name
