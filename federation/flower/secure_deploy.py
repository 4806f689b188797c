"""Flower across sites: TLS certificates, SuperNode keys, and a SuperLink and SuperNodes started with both.

How Flower 1.42 authenticates SuperNodes (read from its source, ``flwr/superlink/routers/fleet/node_auth.py``
and ``flwr/supernode/node_auth_http_interceptor.py``): each SuperNode holds an ECDSA key on a NIST curve (an
OpenSSH private key file, ``--auth-supernode-private-key``). On every Fleet API request it sends its public key
and a signature over the current time; the SuperLink checks the signature, that the time is within 5 minutes
(plus 5 s of clock drift), and that the public key belongs to the node id the request names. With
``--enable-supernode-auth`` (which Flower only accepts with TLS) a node can no longer register itself: its
public key must first be registered through the Control API (``flwr supernode register KEY.pub``), which
creates the node id; an unregistered key's activation is refused and it never gets a message. The signature
covers only the time, not the request, so replay protection within that window is TLS's job.

Fleet, Control and Runtime APIs share one HTTPS port; the SuperLink's own SuperExec connects back to it with
``--ssl-ca-certfile``, so the server certificate names the SuperLink's address as its clients dial it.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.errors import ConfigError, RuntimeFailure
from federation.flower.job import FlowerJob
from federation.flower.launcher import (REAPER, LocalFlower, SuperLinkAddress, _env, _tool, submit,
                                        write_cli_config)
from federation.flower.watch import RunWatch

SUPERLINK_PORT = 9093
_WAIT_FOR_PORT = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0:
            sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
"""


@dataclass(frozen=True)
class Host:
    """A machine of the deployment: ``address`` (an IPv4 address or DNS name: how the others reach it) and
    ``enter`` (the command prefix that runs a program there, e.g. ``ip netns exec NAME``; empty: this one)."""

    address: str
    enter: tuple[str, ...] = ()


@dataclass(frozen=True)
class TlsFiles:
    """The CA certificate every party trusts, and the SuperLink's certificate and private key (PEM)."""

    ca_certificate: Path
    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class NodeKey:
    """A SuperNode's authentication key pair: ECDSA P-384, OpenSSH format (private key file mode 0600)."""

    private_key: Path
    public_key: Path


@dataclass(frozen=True)
class Site:
    """One SuperNode: where it runs, its ``--node-config`` and its key (None: a key of its own, unregistered)."""

    host: Host
    node_config: str
    key: NodeKey | None = None


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _subject_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def make_tls(directory: Path, names: Sequence[str], days: int = 30) -> TlsFiles:
    """A new CA and a SuperLink certificate it signs for ``names`` (IP addresses or DNS names; the first is
    the common name). The CA's private key is used once and not kept: issue a new CA to add a name."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secagg SuperLink CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA384()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
              .add_extension(x509.SubjectAlternativeName([_subject_name(n) for n in names]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA384()))
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_certificate.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_secret(files.private_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return files


def make_node_key(directory: Path, name: str) -> NodeKey:
    """A SuperNode key pair ``name`` / ``name.pub``, as ``ssh-keygen -t ecdsa -b 384 -N ''`` makes it."""
    key = ec.generate_private_key(ec.SECP384R1())
    files = NodeKey(directory / name, directory / f"{name}.pub")
    _write_secret(files.private_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                       serialization.NoEncryption()))
    files.public_key.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                               serialization.PublicFormat.OpenSSH) + b"\n")
    return files


def superlink_command(tls: TlsFiles, host: str, port: int = SUPERLINK_PORT) -> list[str]:
    """``flower-superlink`` with TLS on every API and SuperNode authentication on."""
    return [_tool("flower-superlink"), "--ssl-ca-certfile", str(tls.ca_certificate), "--ssl-certfile",
            str(tls.certificate), "--ssl-keyfile", str(tls.private_key), "--enable-supernode-auth",
            "--disable-runtime-dependency-installation", "--host", host, "--port", str(port)]


def supernode_command(superlink: str, ca_certificate: Path | None, key: NodeKey | None, node_config: str,
                      max_wait: float | None = None, executable: Sequence[str] = ()) -> list[str]:
    """A SuperNode dialling ``superlink`` (host:port) over TLS trusting ``ca_certificate`` (None: in
    plain text, which a TLS SuperLink refuses), signing its requests with ``key`` (None: a key of its own,
    which a SuperLink with node authentication never registered); ``max_wait``: seconds it keeps retrying
    to connect (None: for ever); ``executable``: the SuperNode to start (default: Flower's
    ``flower-supernode``; :class:`SecureFlower` starts ours, with a long-lived ClientApp process)."""
    transport = ["--insecure"] if ca_certificate is None else ["--root-certificates", str(ca_certificate)]
    auth = [] if key is None else ["--auth-supernode-private-key", str(key.private_key)]
    retry = [] if max_wait is None else ["--max-wait-time", str(max_wait)]
    return [*(executable or [_tool("flower-supernode")]), "--superlink", superlink, *transport, *auth, *retry,
            "--node-config", node_config]


def flwr_cli(link: SuperLinkAddress, home: Path, args: Sequence[str], enter: Sequence[str] = (),
             timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``flwr ARGS`` against ``link`` (its connection is written to ``home/config.toml`` as ``secagg``)."""
    write_cli_config(home, link)
    try:
        return subprocess.run([*enter, _tool("flwr"), *args], env=_env(home), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"flwr {' '.join(args)} did not end within {timeout:.0f} s") from None


def register_node(link: SuperLinkAddress, home: Path, key: NodeKey, enter: Sequence[str] = ()) -> int:
    """``flwr supernode register``: the SuperLink accepts ``key`` from now on; returns the node id. Calls at
    the same time need homes of their own."""
    done = flwr_cli(link, home, ["supernode", "register", str(key.public_key), "secagg", "--format", "json"], enter)
    try:
        return int(json.loads(done.stdout)["node-id"])
    except (ValueError, KeyError, TypeError):
        raise RuntimeFailure(f"registering {key.public_key} failed: {done.stdout[-500:]} {done.stderr[-500:]}")


class SecureFlower(LocalFlower):
    """A SuperLink with TLS and node authentication on ``link_host``, one SuperNode per site, each on its own
    host; ``operator`` registers the sites' keys and submits runs. Stopped like :class:`LocalFlower`."""

    def __init__(self, workdir: Path, link_host: Host, tls: TlsFiles, sites: Sequence[Site], operator: Host,
                 port: int = SUPERLINK_PORT) -> None:
        unkeyed = [s.node_config for s in sites if s.key is None]
        if unkeyed:
            raise ConfigError(f"every site needs its registered key; none for {unkeyed}")
        super().__init__(workdir, [s.node_config for s in sites])
        self.link_host, self.tls, self.sites, self.operator = link_host, tls, list(sites), operator
        self.port = port
        self.node_ids: dict[int, int] = {}  # site index -> the node id its key was registered as
        self.home = self.workdir / "flwr-home"

    @property
    def link(self) -> SuperLinkAddress:
        return SuperLinkAddress(f"{self.link_host.address}:{self.port}", root_certificates=self.tls.ca_certificate)

    def start(self, ready_timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.reaper = subprocess.Popen([sys.executable, "-c", REAPER, self.marker], stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.superlink = self._spawn("superlink", [*self.link_host.enter,
                                                   *superlink_command(self.tls, self.link_host.address, self.port)])
        self.wait_until_listening(ready_timeout)
        with ThreadPoolExecutor(max_workers=len(self.sites) or 1) as pool:  # one flwr command per key, at once
            ids = pool.map(lambda i: register_node(self.link, self.home / f"register-{i}", self.sites[i].key,
                                                   self.operator.enter), range(len(self.sites)))
            self.node_ids = dict(enumerate(ids))
        for i, site in enumerate(self.sites):
            self.supernodes.append(self.start_supernode(f"supernode-{i}", site))

    def start_supernode(self, name: str, site: Site, tls: bool = True,
                        max_wait: float | None = None) -> subprocess.Popen:
        """Start ``site``'s SuperNode as a process of this deployment (``tls=False``: in plain text), retrying
        to connect for ``max_wait`` seconds (None: for ever); its log is ``workdir/name.log``."""
        command = supernode_command(self.link.address, self.tls.ca_certificate if tls else None, site.key,
                                    site.node_config, max_wait, self._supernode_command())
        return self._spawn(name, [*site.host.enter, *command])

    def wait_until_listening(self, timeout: float) -> None:
        """Until the SuperLink accepts connections, as seen from the operator's host."""
        probe = subprocess.Popen([*self.operator.enter, sys.executable, "-c", _WAIT_FOR_PORT, self.link_host.address,
                                  str(self.port), str(timeout)])
        deadline = time.monotonic() + timeout + 5
        while probe.poll() is None:
            if self.superlink is not None and self.superlink.poll() is not None:
                probe.kill()
                probe.wait()
                raise RuntimeFailure(f"the SuperLink exited with code {self.superlink.returncode} before it listened")
            if time.monotonic() > deadline:
                probe.kill()
            time.sleep(0.1)
        if probe.returncode != 0:
            raise RuntimeFailure(f"the SuperLink did not listen on {self.link.address} within {timeout:.0f} s")

    def run(self, job: FlowerJob, timeout: float = 1800.0) -> None:
        submit(job, self.link, self.home, timeout, enter=self.operator.enter,
               watch=RunWatch(lambda: self.superlink, self.marker, job.out))

