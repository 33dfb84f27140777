"""Both cluster launcher configs (AWS and `provider: local`) pass Ray's own
preparation and schema validation, as `ray up` runs them; and the Serve config
names an importable application."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name,provider", [("cluster.yaml", "aws"), ("cluster.local.yaml", "local")])
def test_cluster_config_passes_rays_validation(name: str, provider: str):
    raw = yaml.safe_load((ROOT / name).read_text())
    assert raw["provider"]["type"] == provider
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    # Every node starts Ray with the cluster's environment (backends, secrets).
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("cluster.env" in command for command in prepared[key]), key
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_serve_config_imports_from_the_package():
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (app,) = config["applications"]
    module, _, attribute = app["import_path"].partition(":")
    # Inside the installed package: importable on every node whatever its working directory.
    assert module.startswith("troupe.") and attribute == "app"
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
