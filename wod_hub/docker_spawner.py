"""WorkshopDockerSpawner: one container per student, one image per workshop.

Image: the workshop's ``image:`` (workshop.yaml), else ``image_template`` (e.g.
``wod-{workshop_id_lower}``) when the engine has that image, else ``DockerSpawner.image``.

Content delivery (``content_delivery``):

- ``"fetch"`` (default): the container command is wrapped as
  ``wod-hub fetch-content --dest <home> -- <server command>``: at start the container asks
  the hub for its student's rendered workshop with its own API token and extracts it into
  its home; nothing of the hub's filesystem is shared. The image needs wod-hub installed
  (``pip install wod-hub``, standard library only at run time).
- ``"bind"``: the workshop is rendered on the hub's host into ``bind_root/<username>``
  (owned by ``container_uid``) which is mounted as the container's home: the hub and the
  engine must share that filesystem.

Limits: the workshop's ``limits`` (memory, cpu, processes) else ``default_limits`` else
DockerSpawner's own ``mem_limit`` / ``cpu_limit``. ``network_name = "host"`` is supported
(each server gets a free port on ``ip``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port
from traitlets import Enum, Integer, List, Unicode, default

from .provision import Deployment
from .spawner import WorkshopSpawnerMixin


class WorkshopDockerSpawner(WorkshopSpawnerMixin, DockerSpawner):
    image_template = Unicode(
        "",
        help="""Per-workshop image name, used when the engine has it and the workshop names no
        ``image``: ``{workshop_id}`` and ``{workshop_id_lower}`` are replaced, e.g.
        ``wod-{workshop_id_lower}:latest``. Empty: always ``DockerSpawner.image``.""",
    ).tag(config=True)

    content_delivery = Enum(
        ["fetch", "bind"],
        default_value="fetch",
        help="""How the rendered workshop reaches the container: 'fetch' (the container downloads
        it from the hub at start with wod-hub fetch-content) or 'bind' (rendered on the hub's
        host under bind_root and mounted as the home).""",
    ).tag(config=True)

    fetch_command = List(
        Unicode(),
        default_value=["wod-hub", "fetch-content"],
        help="""Command fetching the content inside the container ('fetch' delivery); followed by
        ``--dest <container_home> -- <server command>``. Use ``["python3", "-m",
        "wod_hub.cli.content"]`` when the wod-hub script is not on the image's PATH.""",
    ).tag(config=True)

    bind_root = Unicode(
        "/srv/wod-hub/homes",
        help="""'bind' delivery: host directory holding one home per student (``<bind_root>/<username>``),
        mounted at container_home. Keep it mode 0700 or 0711 and owned by root.""",
    ).tag(config=True)

    container_home = Unicode(
        "/home/jovyan", help="The notebook user's home inside the container (the server's root)."
    ).tag(config=True)

    container_uid = Integer(
        1000, help="uid of the notebook user in the image ('bind': owns the files)."
    ).tag(config=True)
    container_gid = Integer(1000, help="gid of the notebook user in the image.").tag(config=True)

    @default("remove")
    def _remove_default(self):
        # a container belongs to one registration: the next participant of the seat gets a new one
        return True

    # ---- mixin hooks -------------------------------------------------------------------
    async def wod_home(self) -> Path | None:
        if self.content_delivery != "bind":
            return None
        home = Path(self.bind_root) / self.user.name

        def prepare():
            home.mkdir(parents=True, exist_ok=True)
            os.chown(home, self.container_uid, self.container_gid)
            os.chmod(home, 0o700)

        await asyncio.to_thread(prepare)
        return home

    def wod_server_home(self) -> str:
        return self.container_home

    async def wod_owner(self) -> tuple[int, int] | None:
        return (self.container_uid, self.container_gid) if self.content_delivery == "bind" else None

    def wod_apply_limits(self, limits: dict) -> None:
        if limits.get("memory"):
            self.mem_limit = int(limits["memory"])
        if limits.get("cpu"):
            self.cpu_limit = float(limits["cpu"])
        if limits.get("processes"):
            self.extra_host_config = {
                **self.extra_host_config,
                "pids_limit": int(limits["processes"]),
            }

    async def wod_prepare_server(self, dep: Deployment | None) -> None:
        if dep is not None:
            self.image = await self.workshop_image(dep)
        if self.content_delivery == "bind" and self._wod_home_path is not None:
            self.volumes = {
                **self.volumes,
                str(self._wod_home_path): {"bind": self.container_home, "mode": "rw"},
            }

    async def workshop_image(self, dep: Deployment) -> str:
        workshop = dep.workshop
        if workshop.image:
            return workshop.image
        if self.image_template:
            candidate = self.image_template.format(
                workshop_id=workshop.id, workshop_id_lower=workshop.id.lower()
            )
            try:
                await self.docker("inspect_image", candidate)
                return candidate
            except Exception:  # docker.errors.ImageNotFound / APIError: use the fallback
                self.log.debug("No image %s for %s: using %s", candidate, workshop.id, self.image)
        return self.image

    # ---- DockerSpawner overrides -------------------------------------------------------------
    @property
    def host_network(self) -> bool:
        return self.network_name == "host"

    async def start(self):
        if self.host_network:
            # no port mapping on the host network: every server listens on a port of its own
            self.port = random_port()
            self.use_internal_ip = True
        return await super().start()

    async def get_ip_and_port(self):
        if self.host_network:
            return (self.ip if self.ip not in ("", "0.0.0.0") else "127.0.0.1"), self.port
        return await super().get_ip_and_port()

    async def get_command(self):
        cmd = await super().get_command()
        if self.content_delivery == "fetch" and self.wod_deployment is not None:
            return [*self.fetch_command, "--dest", self.container_home, "--", *cmd]
        return cmd
