"""The Flower runtime across real network boundaries: every party a host of its own, TLS, SuperNode auth.

The SuperLink, an operator (who registers the sites' keys and submits the run), three client sites and the CKKS
key holder each run in a Linux network namespace with its own address on a private bridge
(:mod:`tests.federation.flower.netns`); the test makes the CA, the SuperLink's certificate for its address and
every SuperNode's key, and removes every namespace and process afterwards, also when a test fails. Beside the
run, two outsiders try to join: a SuperNode whose key was never registered (claiming client 0's partition) and
one that speaks plain text. One run of the job shows all three claims:

(a) the run completes over TLS with authenticated nodes, and equals the in-process run;
(b) the unregistered node is refused by the SuperLink and never gets a message;
(c) plain text is refused: Flower's own SuperNode in insecure mode, and a bare HTTP request.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("flwr")

from federation.experiment import ExperimentConfig, SecureMode, build_federation  # noqa: E402
from federation.flower.job import FlowerJob  # noqa: E402
from federation.flower.launcher import client_nodes  # noqa: E402
from federation.flower.secure_deploy import (SecureFlower, Site, TlsFiles, list_nodes, make_node_key,  # noqa: E402
                                             make_tls)
from federation.params import get_vector  # noqa: E402
from tests.federation.flower.netns import NamespacesUnavailable, Network, namespaces  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux namespaces")]

# GET /health from another host: in plain text, then over TLS trusting argv[3] (prints one line for each)
PROBE = """
import http.client, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for name, conn in [("plain", http.client.HTTPConnection(host, port, timeout=10)),
                   ("tls", http.client.HTTPSConnection(host, port, timeout=10,
                                                       context=ssl.create_default_context(cafile=ca)))]:
    try:
        conn.request("GET", "/health")
        print(name, "status", conn.getresponse().status)
    except Exception as err:
        print(name, "refused", type(err).__name__)
"""


@dataclass
class Outcome:
    flower: SecureFlower
    job: FlowerJob
    rogue: Site
    plain: Site
    exit_codes: dict[str, int | None]
    nodes: dict[int, str]


@pytest.fixture(scope="module")
def network():
    try:
        net = Network()
    except NamespacesUnavailable as err:
        pytest.skip(str(err))
    try:
        yield net
    finally:
        net.close()


@pytest.fixture(scope="module")
def outcome(network, tmp_path_factory):
    """One CKKS run on the namespaced deployment, with the two outsiders trying to join meanwhile."""
    work = tmp_path_factory.mktemp("netns")
    link, operator = network.add_host("link"), network.add_host("operator")
    sites = [Site(network.add_host(f"site{i}"), node_config, make_node_key(work / "keys", f"site{i}"))
             for i, node_config in enumerate(client_nodes(3, key_holder=True))]
    rogue = Site(network.add_host("rogue"), "partition-id=0", make_node_key(work / "keys", "rogue"))
    plain = Site(network.add_host("plain"), "partition-id=1")
    config = ExperimentConfig(rounds=1, clients=3, local_epochs=1, secure=SecureMode.CKKS, seed=3, hidden=16)
    job = FlowerJob(config, work / "out", stage_timeout=90.0, connect_timeout=60.0)
    with SecureFlower(work, link, make_tls(work / "tls", [link.address]), sites, operator) as flower:
        outsiders = {"rogue": flower.start_supernode("rogue", rogue),
                     "plain": flower.start_supernode("plain", plain, tls=False, max_wait=5)}
        flower.run(job, timeout=300)
        for process in outsiders.values():  # each gave up long before the run ended; killed by stop() if not
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        nodes = list_nodes(flower.link, flower.home, operator.enter)
        yield Outcome(flower, job, rogue, plain, {k: p.poll() for k, p in outsiders.items()}, nodes)


def _log(outcome: Outcome, name: str) -> str:
    return (outcome.flower.workdir / f"{name}.log").read_text()


def _activations(outcome: Outcome, address: str) -> list[str]:
    """The HTTP status of each activation request the SuperLink received from ``address``."""
    pattern = rf'{re.escape(address)}:\d+ - "POST /v1/fleet/activate-node HTTP/1\.1" (\d+)'
    return re.findall(pattern, _log(outcome, "superlink"))


def test_a_ckks_run_completes_over_tls_between_hosts_with_authenticated_nodes(outcome):
    flower, job = outcome.flower, outcome.job
    rounds = json.loads((job.out / "results.json").read_text())["rounds"]
    assert [(r["status"], r["clients"], r["survivors"], r["dropped"], r["rejected"]) for r in rounds] == [
        ("ok", [0, 1, 2], 3, [], [])]
    # every site (the key holder too) was registered, came online from its own address, and is the only node
    assert outcome.nodes == {node: "online" for node in flower.node_ids.values()}
    for site in flower.sites:
        assert _activations(outcome, site.host.address) == ["200"]
    assert "https://" in _log(outcome, "superlink") and "--insecure" not in " ".join(flower.superlink.args)
    # the same job in one process: the same clients, accuracy and parameters (up to CKKS noise)
    federation = build_federation(job.config)
    (expected,) = federation.run()
    assert rounds[0]["accuracy"] == pytest.approx(expected.accuracy, abs=0.02)
    with np.load(job.out / "checkpoint.npz", allow_pickle=False) as checkpoint:
        np.testing.assert_allclose(checkpoint["params"], get_vector(federation.model), atol=2e-3)


def test_a_supernode_with_an_unregistered_key_is_refused_and_gets_no_work(outcome):
    log = _log(outcome, "rogue")
    assert _activations(outcome, outcome.rogue.host.address) == ["412"]  # the SuperLink refused its key
    assert outcome.exit_codes["rogue"] not in (None, 0)
    assert "Failed to activate SuperNode" in log
    assert "SuperNode ID" not in log and "flwr-clientapp" not in log  # it never received a message
    assert len(outcome.nodes) == 4  # its claim to partition 0 never reached the run, which went on


def test_plain_text_connections_are_refused(outcome, tmp_path):
    flower = outcome.flower
    log = _log(outcome, "plain")
    assert outcome.exit_codes["plain"] not in (None, 0)
    assert "Server disconnected without sending a response" in log and "SuperNode ID" not in log
    assert _activations(outcome, outcome.plain.host.address) == []
    # a bare HTTP request from another host gets no answer; over TLS, trusting the test's CA, it does
    probe = [*outcome.plain.host.enter, sys.executable, "-c", PROBE, flower.link_host.address, str(flower.port)]
    trusted = subprocess.run([*probe, str(flower.tls.ca_certificate)], capture_output=True, text=True, timeout=60)
    assert trusted.stdout.split("\n")[:2] == ["plain refused RemoteDisconnected", "tls status 200"], trusted.stderr
    # and a client trusting another CA refuses the SuperLink's certificate
    other: TlsFiles = make_tls(tmp_path / "other", [flower.link_host.address])
    untrusted = subprocess.run([*probe, str(other.ca_certificate)], capture_output=True, text=True, timeout=60)
    assert "tls refused SSLCertVerificationError" in untrusted.stdout, untrusted.stderr


def test_no_namespace_outlives_its_network(tmp_path):
    """The helper removes what it made (the module's own network is removed by its fixture, after this)."""
    try:
        net = Network()
    except NamespacesUnavailable as err:
        pytest.skip(str(err))
    try:
        net.add_host("a")
        made = [n for n in namespaces() if n.startswith(net.tag)]
        assert len(made) == 2  # the bridge's and the host's
    finally:
        net.close()
    assert not [n for n in namespaces() if n.startswith(net.tag)]

