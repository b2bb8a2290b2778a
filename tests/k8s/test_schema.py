"""Every rendered object is valid against the Kubernetes API schemas, strictly (unknown fields fail)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

if TYPE_CHECKING:
    from .conftest import Rendering

# The newest release the schemas ship, and the oldest release these manifests claim to support
# (k8s/README.md). Both must accept every object.
VERSIONS = (latest_version(), "1.30.0")


def _validate(doc: dict[str, Any], version: str) -> str | None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{doc['kind']}/{doc['metadata']['name']} at {where or '<root>'}: {error.message}"
    return None


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_matches_the_api_schema_strictly(any_rendering: Rendering, version: str) -> None:
    assert any_rendering.docs, "nothing rendered"
    errors = [e for doc in any_rendering.docs if (e := _validate(doc, version))]
    assert errors == []


@pytest.mark.parametrize("version", VERSIONS)
def test_secret_manifests_match_the_api_schema(secret_manifests: list[dict[str, Any]], version: str) -> None:
    assert {d["kind"] for d in secret_manifests} == {"Secret"}
    assert [e for doc in secret_manifests if (e := _validate(doc, version))] == []


def test_the_strict_schema_really_rejects_an_unknown_field(renderings: dict[str, Rendering]) -> None:
    """Guards the guard: a misspelt field must not pass as valid."""
    deployment = renderings["prod"].get("Deployment", "api")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    assert _validate(broken, VERSIONS[0]) is not None
