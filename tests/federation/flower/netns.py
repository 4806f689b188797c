"""Hosts for tests: Linux network namespaces on one private bridge, made and removed with iproute2.

Each host is a namespace with its own loopback and one address on ``SUBNET``; the bridge lives in a namespace
of its own, so nothing is added to this machine's network and no traffic leaves the namespaces. Names carry
this process's id: namespaces left by a process that died without cleaning up (SIGKILL) are removed by the
next :class:`Network`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import subprocess

from federation.flower.secure_deploy import Host

PREFIX = "secagg-t"
SUBNET = ipaddress.ip_network("10.231.0.0/24")
_NAME = re.compile(rf"{PREFIX}(\d+)-[0-9a-f]{{6}}-\w+")


class NamespacesUnavailable(Exception):
    """This machine does not let this process make network namespaces (not root, no iproute2, a sandbox)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def remove_stale() -> None:
    """Delete the namespaces of test processes that are gone."""
    for name in namespaces():
        match = _NAME.fullmatch(name)
        if match and not _pid_alive(int(match.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


class Network:
    """A bridge and the hosts on it; :meth:`close` removes every namespace (and with them every link)."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise NamespacesUnavailable("network namespaces need root (ip netns add)")
        if shutil.which("ip") is None:
            raise NamespacesUnavailable("iproute2's ip command is not installed")
        remove_stale()
        self.tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.names: list[str] = []
        self.hosts: dict[str, Host] = {}
        try:
            self.switch = self._namespace("sw")
        except RuntimeError as err:
            raise NamespacesUnavailable(f"this machine refuses network namespaces: {err}") from None
        try:
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def _namespace(self, role: str) -> str:
        name = f"{self.tag}-{role}"
        _ip("netns", "add", name)
        self.names.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def add_host(self, role: str) -> Host:
        """A new host ``role`` (letters, digits, _) with the next address of ``SUBNET``."""
        index = len(self.hosts) + 1
        address = str(SUBNET.network_address + index)
        name = self._namespace(role)
        port = f"p{index}"
        _ip("link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", port, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")
        _ip("-n", name, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        host = Host(address, ("ip", "netns", "exec", name))
        self.hosts[role] = host
        return host

    def close(self) -> None:
        """Remove every namespace of this network (call after the processes inside have ended)."""
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        self.names = []
