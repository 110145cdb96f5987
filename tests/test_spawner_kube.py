"""WorkshopKubeSpawner's pods, built without a cluster (KubeSpawner's ``_mock`` user and hub):
image per workshop, fetch-content as the command or as an init container, limits and the
workshop's environment."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.test_spawner import make_workshop
from wod_hub.catalog import load_catalog
from wod_hub.personalize import StudentContext
from wod_hub.provision import Deployment

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: wod}}]
current-context: none
"""


@pytest.fixture
def catalog(tmp_path):
    root = tmp_path / "workshops"
    make_workshop(root, "WKSHP-Kube", "1-10", image="registry.example.org/kube-lab:1",
                  limits={"memory": "1G", "cpu": 0.5}, varpass=True, variables={"API_URL": "https://api"})  # fmt: skip
    make_workshop(root, "WKSHP-Plain", "11-20")
    catalog = load_catalog([root])
    assert not catalog.errors, catalog.errors
    return catalog


def deployment(catalog, workshop_id: str, number: int) -> Deployment:
    ctx = StudentContext(
        student_number=number, username=f"student{number}", password="Seat-Secret-123",
        participant_first_name="Ada", participant_last_name="Lovelace", participant_email="ada@example.org",
        hub_url="https://hub.example.org/hub/", expires_at=datetime(2030, 1, 1, 12, 0),
    )  # fmt: skip
    return Deployment(
        registration_id=42, state="registered", workshop=catalog.workshops[workshop_id],
        context=ctx, catalog_variables={}, email="ada@example.org",
    )  # fmt: skip


@pytest.fixture
def make_spawner(tmp_path, monkeypatch):
    config = tmp_path / "kubeconfig"
    config.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(config))
    from wod_hub.spawner import WorkshopKubeSpawner  # the entry point's import path

    def make(username: str, **traits):
        spawner = WorkshopKubeSpawner(_mock=True, **traits)
        spawner.user.name = username
        spawner.api_token = "server-token-of-" + username
        return spawner

    return make


def env_of(container) -> dict:
    return {e.name: e.value for e in container.env or []}


async def test_fetch_as_command_with_the_workshops_image_limits_and_env(catalog, make_spawner):
    spawner = make_spawner("student3")
    await spawner.wod_configure(deployment(catalog, "WKSHP-Kube", 3))
    pod = await spawner.get_pod_manifest()
    (notebook,) = pod.spec.containers
    assert notebook.image == "registry.example.org/kube-lab:1"
    assert notebook.args == [
        "wod-hub",
        "fetch-content",
        "--dest",
        "/home/jovyan",
        "--",
        "jupyterhub-singleuser",
    ]
    assert pod.spec.init_containers in (None, [])
    assert notebook.resources.limits == {"memory": 1024**3, "cpu": 0.5}
    env = env_of(notebook)
    assert (
        env["WOD_WORKSHOP"] == "WKSHP-Kube"
        and env["STDID"] == "3"
        and env["WOD_USERNAME"] == "student3"
    )
    assert (
        env["API_URL"] == "https://api" and env["PASSSTU"] == "Seat-Secret-123"
    )  # varpass workshop
    assert env["WOD_EXPIRES_AT"] == "2030-01-01T12:00:00Z" and env["WOD_HOME"] == "/home/jovyan"
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/lab/tree/WKSHP-Kube/0-ReadMeFirst.ipynb"
    assert env["JUPYTERHUB_API_TOKEN"] == "server-token-of-student3"


async def test_fetch_in_an_init_container_sharing_the_home(catalog, make_spawner):
    spawner = make_spawner(
        "student12", content_delivery="init-container", image_template="wod-{workshop_id_lower}:latest",
        cmd=["jupyterhub-singleuser"], args=["--debug"],
    )  # fmt: skip
    await spawner.wod_configure(deployment(catalog, "WKSHP-Plain", 12))
    pod = await spawner.get_pod_manifest()
    (notebook,) = pod.spec.containers
    (init,) = pod.spec.init_containers
    assert notebook.image == init.image == "wod-wkshp-plain:latest"
    assert notebook.args == ["jupyterhub-singleuser", "--debug"]  # the server itself, unwrapped
    assert init.args == ["wod-hub", "fetch-content", "--dest", "/home/jovyan"]
    assert set(env_of(init)) == {"JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER"}
    assert env_of(init)["JUPYTERHUB_USER"] == "student12"
    home_mounts = [(m.name, m.mount_path) for m in notebook.volume_mounts if m.name == "wod-home"]
    assert (
        home_mounts
        == [("wod-home", "/home/jovyan")]
        == [(m.name, m.mount_path) for m in init.volume_mounts]
    )
    (volume,) = [v for v in pod.spec.volumes if v.name == "wod-home"]
    assert volume.empty_dir is not None
    env = env_of(notebook)
    assert "PASSSTU" not in env and env["WOD_WORKSHOP"] == "WKSHP-Plain"
    assert notebook.resources.limits in (None, {})  # no workshop limit, no default


async def test_defaults_and_plain_servers(catalog, make_spawner):
    spawner = make_spawner("student13", default_limits={"memory": "512M", "cpu": 2})
    await spawner.wod_configure(deployment(catalog, "WKSHP-Plain", 13))
    pod = await spawner.get_pod_manifest()
    (notebook,) = pod.spec.containers
    assert (
        notebook.image == spawner.image == "quay.io/jupyterhub/singleuser:latest"
    )  # no template: the fallback
    assert notebook.resources.limits == {"memory": 512 * 1024**2, "cpu": 2.0}
    # an admin's plain server: no deployment, nothing wrapped
    admin = make_spawner("admin")
    pod = await admin.get_pod_manifest()
    assert pod.spec.containers[0].args is None and not pod.spec.init_containers
    assert "WOD_WORKSHOP" not in env_of(pod.spec.containers[0])
    assert json.dumps(admin.default_limits) == "{}"
