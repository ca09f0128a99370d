"""The cluster files: launcher YAMLs validated by Ray's own schema and checks, KubeRay manifests parsed."""
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from raylab.config import load_config

CLUSTER = Path(__file__).parents[1] / "cluster"
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


@pytest.mark.parametrize("name", ["aws.yaml", "onprem.yaml"])
def test_launcher_yaml_passes_rays_schema_and_checks(name):
    raw = yaml.safe_load((CLUSTER / name).read_text())
    jsonschema.validate(raw, SCHEMA)
    validate_config(prepare_config(raw))
    assert any("raylab" in cmd for cmd in raw["setup_commands"])


def test_schema_rejects_a_misspelled_key():
    raw = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    raw["max_wrokers"] = raw.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_wrokers"):
        jsonschema.validate(raw, SCHEMA)


def kuberay_docs():
    docs = []
    for path in sorted((CLUSTER / "kuberay").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kuberay_manifests_match_this_ray_and_run_a_real_experiment():
    docs = kuberay_docs()
    kinds = {d["kind"] for d in docs}
    assert {"RayCluster", "RayJob"} <= kinds
    for doc in docs:
        assert doc["apiVersion"] and doc["metadata"]["name"]
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        if doc["kind"] in ("RayCluster", "RayJob"):
            assert spec["rayVersion"] == ray.__version__
            groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
            for group in groups:
                (container,) = group["template"]["spec"]["containers"]
                assert container["image"] and container["resources"]["limits"]["cpu"]
    for doc in docs:  # the RayJob submitter and the operator talk to the dashboard through the head Service
        if doc["kind"] in ("RayCluster", "RayJob"):
            head = doc["spec"].get("rayClusterSpec", doc["spec"])["headGroupSpec"]
            assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0", doc["kind"]
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    command, _, config, *overrides = shlex.split(job["spec"]["entrypoint"])
    assert command == "raylab"
    load_config(Path(__file__).parents[1] / config, overrides)
