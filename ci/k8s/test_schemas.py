"""Every kustomization builds, and every object it renders is valid Kubernetes 1.35, strictly
(no unknown field anywhere), as the API server of that version would accept it."""

import copy

import kubernetes_validate
import pytest

from k8s_model import KUSTOMIZATIONS, render

KUBERNETES_VERSION = "1.35.0"


def rendered_objects() -> list:
    params = []
    for overlay, directory in KUSTOMIZATIONS.items():
        for doc in render(directory).docs:
            params.append(pytest.param(doc, id=f"{overlay}:{doc['kind']}/{doc['metadata']['name']}"))
    return params


@pytest.mark.parametrize("overlay", sorted(KUSTOMIZATIONS))
def test_kustomization_builds(overlay):
    docs = render(KUSTOMIZATIONS[overlay]).docs
    assert docs, f"{overlay} renders no object"


@pytest.mark.parametrize("doc", rendered_objects())
def test_object_is_valid_kubernetes_1_35(doc):
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{'.'.join(map(str, e.path))}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        pytest.fail(e.message)


def test_the_validator_rejects_an_unknown_field():
    """Control: strict validation is really on (a typo in a field name must fail)."""
    deployment = copy.deepcopy(render(KUSTOMIZATIONS["dev"]).get("Deployment", "borrow-svc"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
