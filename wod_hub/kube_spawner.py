"""WorkshopKubeSpawner (a sketch on KubeSpawner): one pod per student, one image per workshop.

The hub's filesystem is never shared with pods: the pod fetches its student's rendered
workshop from the hub (``GET /hub/api/wod/content/<user>`` with the server's own token)
with ``wod-hub fetch-content``, either

- ``content_delivery = "command"`` (default): the notebook container's command becomes
  ``wod-hub fetch-content --dest <home> -- <server command>``; or
- ``content_delivery = "init-container"``: an init container (same image) fetches into an
  ``emptyDir`` volume mounted as the home of the notebook container.

Image: the workshop's ``image:``, else ``image_template`` (``{workshop_id}``,
``{workshop_id_lower}``), else ``KubeSpawner.image``. Limits: memory and cpu of the
workshop (else ``default_limits``, else KubeSpawner's ``mem_limit`` / ``cpu_limit``);
process counts are a node setting (kubelet ``podPidsLimit``) on Kubernetes.
"""

from __future__ import annotations

from kubernetes_asyncio.client.models import (
    V1Container,
    V1EmptyDirVolumeSource,
    V1EnvVar,
    V1Volume,
    V1VolumeMount,
)
from kubespawner import KubeSpawner
from traitlets import Enum, List, Unicode

from .provision import Deployment
from .spawner import WorkshopSpawnerMixin

HOME_VOLUME = "wod-home"
FETCH_ENV = ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER")


class WorkshopKubeSpawner(WorkshopSpawnerMixin, KubeSpawner):
    image_template = Unicode(
        "",
        help="""Per-workshop image when the workshop names no ``image``: ``{workshop_id}`` and
        ``{workshop_id_lower}`` are replaced, e.g. ``registry.example.org/wod-{workshop_id_lower}:2025``.
        Empty: KubeSpawner.image. (Unlike Docker, the image is not checked before the pod is made.)""",
    ).tag(config=True)

    content_delivery = Enum(
        ["command", "init-container"],
        default_value="command",
        help="""How the pod gets its workshop: 'command' (the notebook container runs wod-hub
        fetch-content, then the server) or 'init-container' (an init container fetches it into an
        emptyDir mounted at container_home).""",
    ).tag(config=True)

    fetch_command = List(
        Unicode(),
        default_value=["wod-hub", "fetch-content"],
        help="Command fetching the content in the pod; followed by ``--dest <container_home>``.",
    ).tag(config=True)

    container_home = Unicode(
        "/home/jovyan", help="The notebook user's home in the pod (where the workshop folder goes)."
    ).tag(config=True)

    # ---- mixin hooks -------------------------------------------------------------------
    def wod_server_home(self) -> str:
        return self.container_home

    def wod_apply_limits(self, limits: dict) -> None:
        if limits.get("memory"):
            self.mem_limit = int(limits["memory"])
        if limits.get("cpu"):
            self.cpu_limit = float(limits["cpu"])

    async def wod_prepare_server(self, dep: Deployment | None) -> None:
        if dep is None:
            return
        if dep.workshop.image:
            self.image = dep.workshop.image
        elif self.image_template:
            self.image = self.image_template.format(
                workshop_id=dep.workshop.id, workshop_id_lower=dep.workshop.id.lower()
            )

    # ---- the pod -------------------------------------------------------------------------
    def server_command(self) -> list[str]:
        return [*(self.cmd or ["jupyterhub-singleuser"]), *self.get_args()]

    async def get_pod_manifest(self):
        pod = await super().get_pod_manifest()
        if self.wod_deployment is None:
            return pod
        notebook = pod.spec.containers[0]
        fetch = [*self.fetch_command, "--dest", self.container_home]
        if self.content_delivery == "command":
            notebook.args = [*fetch, "--", *self.server_command()]
            return pod
        mount = V1VolumeMount(name=HOME_VOLUME, mount_path=self.container_home)
        notebook.volume_mounts = [*(notebook.volume_mounts or []), mount]
        pod.spec.volumes = [
            *(pod.spec.volumes or []),
            V1Volume(name=HOME_VOLUME, empty_dir=V1EmptyDirVolumeSource()),
        ]
        env = {e.name: e.value for e in notebook.env or []}
        init = V1Container(
            name="wod-fetch-content",
            image=notebook.image,
            image_pull_policy=notebook.image_pull_policy,
            args=fetch,
            env=[V1EnvVar(name=k, value=env[k]) for k in FETCH_ENV if k in env],
            volume_mounts=[mount],
            security_context=notebook.security_context,
            resources=notebook.resources,
        )
        pod.spec.init_containers = [init, *(pod.spec.init_containers or [])]
        return pod
