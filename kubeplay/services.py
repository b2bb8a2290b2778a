"""A Service as kube-proxy makes it: a stable name and ports that reach the ready pods only.

Each Service is one nginx container (the stream module: plain TCP, like kube-proxy) on the
namespace network under the Service's names, listening on the Service's ports and sending each
connection to a ready pod's target port. A port with no ready pod is not listened on, so a client
gets "connection refused", as from a ClusterIP Service without endpoints.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.types import EndpointConfig, Mount

from .manifests import Obj

Endpoint = tuple[str, dict[str, int]]  # a ready pod: its IP, its container's ports by name and number
CONFIG = """\
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
pid /tmp/nginx.pid;
error_log stderr warn;
events {{}}
stream {{
{servers}}}
"""


def target_port(port: Obj, ports: dict[str, int]) -> int | None:
    """Where a Service port sends on a pod: its targetPort by name or number (None: not on this pod)."""
    target = port.get("targetPort", port["port"])
    if isinstance(target, int):
        return target
    return ports.get(target) or (int(target) if target.isdigit() else None)


def config(service: Obj, endpoints: list[Endpoint]) -> str:
    """The nginx configuration for ``service`` with ``endpoints`` ready."""
    servers = []
    for port in service["spec"]["ports"]:
        if (port.get("protocol") or "TCP") != "TCP":
            continue
        upstreams = sorted({f"{ip}:{target}" for ip, ports in endpoints if (target := target_port(port, ports))})
        if not upstreams:
            continue  # nothing listens: connection refused
        name = f"port_{port['port']}"
        lines = "".join(f"    server {address};\n" for address in upstreams)
        servers.append(
            f"  upstream {name} {{\n{lines}  }}\n"
            f"  server {{ listen {port['port']}; proxy_pass {name}; proxy_connect_timeout 2s; }}\n"
        )
    return CONFIG.format(servers="".join(servers))


@dataclass
class ServiceProxy:
    service: Obj
    directory: Path
    published: dict[int, int] = field(default_factory=dict)  # Service port -> host port on 127.0.0.1
    container: Any = None
    current: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.service["metadata"]["name"]

    def selects(self, labels: dict[str, str]) -> bool:
        selector = self.service["spec"].get("selector") or {}
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    def start(self, client: Any, *, image: str, network: str, aliases: list[str], labels: dict[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.current = config(self.service, [])
        (self.directory / "nginx.conf").write_text(self.current)
        self.container = client.containers.run(
            image,
            name=f"{network}-svc-{self.name}",
            entrypoint=["nginx", "-c", "/kubeplay/nginx.conf"],
            command=[],
            detach=True,
            read_only=True,
            mounts=[
                Mount("/kubeplay", str(self.directory), type="bind", read_only=True),
                Mount("/tmp", None, type="tmpfs"),  # noqa: S108 (the proxy's pid file)
            ],
            ports={f"{port}/tcp": ("127.0.0.1", host) for port, host in self.published.items()} or None,
            labels=labels,
            network=network,
            networking_config={network: EndpointConfig(version="1.41", aliases=aliases)},
        )
        checked = self.container.exec_run(["nginx", "-t", "-q", "-c", "/kubeplay/nginx.conf"])
        if checked.exit_code != 0:  # e.g. an nginx without the stream module
            raise RuntimeError(f"Service/{self.name}: the proxy image {image} fails: {checked.output.decode().strip()}")

    def update(self, endpoints: list[Endpoint]) -> None:
        """Send to ``endpoints`` from now on: returns once nginx has reloaded, so every connection
        accepted after it reaches them (open connections finish where they are)."""
        with self.lock:
            wanted = config(self.service, endpoints)
            if wanted == self.current or self.container is None:
                return
            (self.directory / "nginx.conf").write_text(wanted)
            before = self.serving_workers()
            result = self.container.exec_run(["nginx", "-c", "/kubeplay/nginx.conf", "-s", "reload"])
            if result.exit_code != 0:
                raise RuntimeError(f"Service/{self.name}: proxy reload failed: {result.output.decode().strip()}")
            self.wait_reloaded(before)
            self.current = wanted

    def serving_workers(self) -> set[str]:
        """PIDs of the nginx workers that accept connections (not those shutting down)."""
        processes = self.container.top(ps_args="-o pid,args")["Processes"] or []
        return {pid for pid, args in processes if "worker process" in args and "shutting down" not in args}

    def wait_reloaded(self, before: set[str], timeout: float = 10) -> None:
        """Until only workers started by the reload accept: `nginx -s reload` only signals the
        master, and an old worker keeps taking connections with the old endpoints until it has
        closed its listeners (then its title says "shutting down")."""
        deadline = time.monotonic() + timeout
        while (serving := self.serving_workers()) & before or not serving:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Service/{self.name}: the proxy did not reload within {timeout:.0f} s")
            time.sleep(0.05)
