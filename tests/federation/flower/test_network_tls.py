"""The Flower runtime across real network boundaries: every party a host of its own, TLS, SuperNode auth.

The SuperLink, an operator (who registers the sites' keys and submits the run) and three client sites (and the
CKKS key holder, with ``MODE = ckks``) each run in a Linux network namespace with its own address on a private
bridge (:mod:`tests.federation.flower.netns`); the test makes the CA, the SuperLink's certificate for its address
and every SuperNode's key, and removes every namespace and process afterwards, also when a test fails. Beside
the run, two outsiders try to join: a SuperNode whose key was never registered (claiming client 0's partition)
and one that speaks plain text. One run of the job (one round) shows all three claims:

(a) the run completes over TLS with authenticated nodes;
(b) the unregistered node is refused by the SuperLink and never gets a message;
(c) plain text is refused: Flower's own SuperNode in insecure mode, and a bare HTTP request.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

pytest.importorskip("flwr")

from federation.experiment import ExperimentConfig, SecureMode  # noqa: E402
from federation.flower.job import FlowerJob  # noqa: E402
from federation.flower.launcher import client_nodes  # noqa: E402
from federation.flower.secure_deploy import SecureFlower, Site, make_node_key, make_tls  # noqa: E402
from tests.federation.flower.netns import SUBNET, NamespacesUnavailable, Network, namespaces  # noqa: E402

# The protection mode of the run. Transport and node authentication do not depend on it (the key holder is one
# more SuperNode with the same flags; the protocols over Flower are checked in test_flower_runtime.py), and each
# mode's extra message exchanges cost seconds of ClientApp start-up here: plaintext keeps the test fastest.
MODE = SecureMode.NONE

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
    """One run on the namespaced deployment, with the two outsiders trying to join meanwhile."""
    work = tmp_path_factory.mktemp("netns")
    link, operator = network.add_host("link"), network.add_host("operator")
    sites = [Site(network.add_host(f"site{i}"), node_config, make_node_key(work / "keys", f"site{i}"))
             for i, node_config in enumerate(client_nodes(3, key_holder=MODE is SecureMode.CKKS))]
    rogue = Site(network.add_host("rogue"), "partition-id=0", make_node_key(work / "keys", "rogue"))
    plain = Site(network.add_host("plain"), "partition-id=1")
    config = ExperimentConfig(rounds=1, clients=3, local_epochs=1, secure=MODE, seed=3, hidden=16)
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
        yield Outcome(flower, job, rogue, plain, {k: p.poll() for k, p in outsiders.items()})


def _log(outcome: Outcome, name: str) -> str:
    return (outcome.flower.workdir / f"{name}.log").read_text()


def _activations(outcome: Outcome, address: str) -> list[str]:
    """The HTTP status of each activation request the SuperLink received from ``address``."""
    pattern = rf'{re.escape(address)}:\d+ - "POST /v1/fleet/activate-node HTTP/1\.1" (\d+)'
    return re.findall(pattern, _log(outcome, "superlink"))


def _activated(outcome: Outcome) -> set[int]:
    """The node ids the SuperLink activated (let in)."""
    activated = re.findall(r"\[Fleet\.ActivateNode\] Activated node_id=(\d+)", _log(outcome, "superlink"))
    return {int(node) for node in activated}


def test_a_run_completes_over_tls_between_hosts_with_authenticated_nodes(outcome):
    flower, job = outcome.flower, outcome.job
    rounds = json.loads((job.out / "results.json").read_text())["rounds"]
    assert [(r["status"], r["clients"], r["survivors"], r["dropped"], r["rejected"]) for r in rounds] == [
        ("ok", [0, 1, 2], 3, [], [])]
    # every site (and key holder) was registered, came online from its own address, and no other node did
    assert _activated(outcome) == set(flower.node_ids.values())
    for site in flower.sites:
        assert set(_activations(outcome, site.host.address)) == {"200"}
    assert "https://" in _log(outcome, "superlink") and "--insecure" not in " ".join(flower.superlink.args)
    # each site trained on its own shard (that a Flower run equals the in-process run is checked in
    # test_flower_runtime.py; the transport does not change it)
    per_client = rounds[0]["per_client"]
    assert [c["client"] for c in per_client] == [0, 1, 2]
    assert all(c["status"] == "ok" and c["examples"] > 0 and c["train_loss"] > 0 for c in per_client)
    assert 0 < rounds[0]["accuracy"] <= 1 and (job.out / "done.json").exists()


def test_a_supernode_with_an_unregistered_key_is_refused_and_gets_no_work(outcome):
    log = _log(outcome, "rogue")
    assert set(_activations(outcome, outcome.rogue.host.address)) == {"412"}  # the SuperLink refused its key
    assert outcome.exit_codes["rogue"] not in (None, 0)
    assert "Failed to activate SuperNode" in log
    assert "SuperNode ID" not in log and "flwr-clientapp" not in log  # it never received a message
    assert _activated(outcome) == set(outcome.flower.node_ids.values())  # only the registered sites


def test_plain_text_connections_are_refused(outcome, tmp_path):
    flower = outcome.flower
    log = _log(outcome, "plain")
    assert outcome.exit_codes["plain"] not in (None, 0)
    assert "could not establish a connection to the SuperLink" in log and "SuperNode ID" not in log
    assert _activations(outcome, outcome.plain.host.address) == []  # no request of it ever reached the API
    # a bare HTTP request from another host gets no answer; over TLS, trusting the test's CA, it does
    probe = [*outcome.plain.host.enter, sys.executable, "-c", PROBE, flower.link_host.address, str(flower.port)]
    trusted = subprocess.run([*probe, str(flower.tls.ca_certificate)], capture_output=True, text=True, timeout=60)
    plain, tls = trusted.stdout.split("\n")[:2]
    assert plain.startswith("plain refused") and tls == "tls status 200", trusted.stdout + trusted.stderr
    # and a client trusting another CA refuses the SuperLink's certificate
    other = make_tls(tmp_path / "other", [flower.link_host.address])
    untrusted = subprocess.run([*probe, str(other.ca_certificate)], capture_output=True, text=True, timeout=60)
    assert "tls refused SSLCertVerificationError" in untrusted.stdout, untrusted.stderr


def test_the_network_touches_nothing_outside_and_leaves_nothing_behind():
    """Hosts have no route out, this machine's own links are untouched, and every namespace is removed (the
    module's network, above, is removed by its fixture after the last test)."""
    links = _links()
    try:
        net = Network()
    except NamespacesUnavailable as err:
        pytest.skip(str(err))
    try:
        host = net.add_host("a")
        assert len([n for n in namespaces() if n.startswith(net.tag)]) == 2  # the bridge's and the host's
        routes = subprocess.run([*host.enter, "ip", "route"], capture_output=True, text=True, timeout=30).stdout
        assert routes.split() == [str(SUBNET), "dev", "eth0", "proto", "kernel", "scope", "link", "src", host.address]
        assert _links() == links
    finally:
        net.close()
    assert not [n for n in namespaces() if n.startswith(net.tag)]


def _links() -> list[str]:
    """This machine's own network links (names)."""
    done = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=30)
    return sorted(line.split(":")[1].strip() for line in done.stdout.splitlines())



def test_the_open_source_superlink_does_not_authenticate_the_control_api(monkeypatch):
    """Why the deployment guide says only the sites and the operator may reach the SuperLink's port: its
    Control API (register a SuperNode key, submit a run), on the same port as the Fleet API, takes any request
    without credentials. If this fails, Flower authenticates it now: update docs/deployment.md and
    docs/threat-model.md."""
    from flwr.superlink.config_loader import load_control_authn_plugin

    monkeypatch.delenv("FLWR_OIDC_ENABLED", raising=False)
    accepted, account = load_control_authn_plugin().validate_tokens_in_metadata([])
    assert accepted and account is not None
