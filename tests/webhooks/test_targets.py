"""alignd/webhooks/targets.py: a webhook reaches only public addresses unless an admin allows more.
Registration through the app refuses each kind of internal address with a 400 on `url` saying why; a name
re-pointed at loopback after registration is refused at delivery, and an attempt connects to the address
it checked, not to what the name resolves to a moment later. On SQLite and Postgres."""

import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from fastapi.testclient import TestClient
from pydantic import ValidationError

from alignd.config import Settings
from alignd.webhooks.targets import ForbiddenTarget, TargetPolicy, UnresolvedTarget, forbidden_kind
from tests.api.helpers import bearer

from .conftest import Dns, LiveApps, Receiver, cancelled_job, new_project, register, settled_delivery

REFUSED = [
    ("http://127.0.0.1/hooks", "127.0.0.1 is a loopback address"),
    ("http://127.9.9.9:8080/hooks", "is a loopback address"),
    ("http://[::1]/hooks", "::1 is a loopback address"),
    ("http://localhost:8000/hooks", "'localhost' is loopback"),
    ("http://LOCALHOST./hooks", "'localhost' is loopback"),
    ("http://api.localhost/hooks", "'api.localhost' is loopback"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://[fe80::1]/hooks", "is a link-local address"),
    ("http://10.1.2.3/hooks", "10.1.2.3 is a private address"),
    ("http://172.16.0.1/hooks", "is a private address"),
    ("https://192.168.1.10/hooks", "is a private address"),
    ("http://[fd00::1]/hooks", "is a private address"),
    ("http://100.64.0.1/hooks", "is a non-public address"),
    ("http://0.0.0.0:8000/hooks", "0.0.0.0 is an unspecified address"),
    ("http://[::]/hooks", ":: is an unspecified address"),
    ("http://224.0.0.1/hooks", "is a multicast address"),
    ("http://240.0.0.1/hooks", "is a reserved address"),
    ("http://[::ffff:127.0.0.1]/hooks", "is a loopback address"),
    ("http://[::ffff:169.254.169.254]/hooks", "is a link-local address"),
    ("http://[2002:7f00:1::]/hooks", "is a loopback address"),
    ("http://[64:ff9b::a9fe:a9fe]/hooks", "is a link-local address"),
    ("http://2130706433/hooks", "'2130706433' resolves to a loopback address"),
    ("http://0x7f.1/hooks", "'0x7f.1' resolves to a loopback address"),
    ("http://loopy.test:8080/hooks", "'loopy.test' resolves to a loopback address"),
    ("http://metadata.test/hooks", "'metadata.test' resolves to a link-local address"),
    ("http://mixed.test/hooks", "'mixed.test' resolves to a private address"),
]


def test_registration_refuses_every_kind_of_internal_address(client: TestClient, key: str, dns: Dns) -> None:
    dns.point("loopy.test", "127.0.0.1")
    dns.point("metadata.test", "169.254.169.254")
    dns.point("mixed.test", "93.184.215.14", "10.0.0.7")  # one internal answer is enough
    for url, reason in REFUSED:
        response = client.post("/v1/webhooks", json={"url": url}, headers=bearer(key))
        assert response.status_code == 400, (url, response.text)
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("url", "forbidden_url"), (url, error)
        assert reason in error["message"], (url, error["message"])
        assert "ALIGND_WEBHOOK_ALLOWED_HOSTS" in error["message"]
    assert client.get("/v1/webhooks", headers=bearer(key)).json()["data"] == []


def test_public_addresses_and_names_not_resolving_yet_are_accepted(
    client: TestClient, key: str, dns: Dns
) -> None:
    dns.point("hooks.test", "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    for url in ("https://hooks.test/alignd", "http://93.184.215.14:8080/x", "https://unknown.test/x"):
        response = client.post("/v1/webhooks", json={"url": url}, headers=bearer(key))
        assert response.status_code == 200, (url, response.text)


def test_the_allow_list_admits_named_hosts_and_networks_only(
    live_apps: LiveApps, tmp_path: Path, dns: Dns
) -> None:
    live = live_apps.start(run_controller=False, webhook_allowed_hosts=["10.8.0.0/16", "Hooks.Internal.test"])
    key = new_project(live, tmp_path)
    dns.point("hooks.internal.test", "10.99.0.5")
    dns.point("other.internal.test", "10.99.0.5")
    for url, status in (
        ("http://10.8.3.4/hooks", 200),
        ("http://hooks.internal.test/hooks", 200),
        ("http://10.9.0.1/hooks", 400),
        ("http://other.internal.test/hooks", 400),
        ("http://127.0.0.1/hooks", 400),
    ):
        response = live.post("/v1/webhooks", json={"url": url}, headers=bearer(key))
        assert response.status_code == status, (url, response.text)


def test_a_name_rebound_to_loopback_after_registration_is_refused_at_delivery(
    live_apps: LiveApps, tmp_path: Path, dns: Dns, receiver: Receiver
) -> None:
    """Registered while the name answers a public address; by the time of the event it answers the
    receiver's (loopback) address, which this server does not allow."""
    live = live_apps.start(webhook_allowed_hosts=[])
    key = new_project(live, tmp_path)
    port = receiver.port
    dns.point("rebind.test", "93.184.215.14")
    endpoint_id = register(live, key, f"http://rebind.test:{port}/hooks", receiver)
    dns.point("rebind.test", "127.0.0.1")
    cancelled_job(live, key)

    failed = settled_delivery(live, key, endpoint_id)
    assert failed["status"] == "failed" and failed["last_status_code"] is None
    assert failed["last_error"] == (
        "forbidden_address: url host 'rebind.test' resolves to a loopback address; webhooks may only "
        "reach public addresses (an admin can allow it with ALIGND_WEBHOOK_ALLOWED_HOSTS)"
    )
    assert [a["error"].split(":")[0] for a in failed["attempts"]] == ["forbidden_address"] * 3
    assert receiver.received == []


def test_an_attempt_connects_to_the_address_it_checked(
    live_apps: LiveApps, tmp_path: Path, dns: Dns, receiver: Receiver
) -> None:
    """The name answers an allowed address (127.0.0.2, where nothing listens) to the attempt's check and
    the receiver's address (127.0.0.1, not allowed) to any later lookup: the request must go to the
    first, so it is refused, and the receiver hears nothing."""
    live = live_apps.start(webhook_allowed_hosts=["127.0.0.2"], webhook_max_attempts=1)
    key = new_project(live, tmp_path)
    port = receiver.port
    dns.point("pinned.test", "127.0.0.2")
    endpoint_id = register(live, key, f"http://pinned.test:{port}/hooks", receiver)
    dns.point("pinned.test", "127.0.0.2", then=["127.0.0.1"])
    cancelled_job(live, key)

    failed = settled_delivery(live, key, endpoint_id)
    assert failed["last_error"] == "connect_error: could not connect to the endpoint", failed
    assert receiver.received == []


def test_redirects_are_not_followed(
    live_apps: LiveApps, tmp_path: Path, receivers: Callable[[], Receiver]
) -> None:
    """A receiver answering 307 is an error to retry; the dispatcher does not go where it points."""
    live = live_apps.start(webhook_max_attempts=1)
    key = new_project(live, tmp_path)
    redirecting = receivers()
    redirecting.default = 307
    endpoint_id = register(live, key, redirecting.url, redirecting)
    cancelled_job(live, key)

    failed = settled_delivery(live, key, endpoint_id)
    assert failed["last_error"] == "http_307: the endpoint answered HTTP 307"
    assert len(redirecting.wait_for(1)) == 1


def test_https_goes_to_the_checked_address_and_verifies_the_certificate_for_the_host_name(
    live_apps: LiveApps,
    tmp_path: Path,
    dns: Dns,
    receivers: Callable[..., Receiver],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection goes to the address, but TLS names the URL's host (SNI and certificate check), and
    so does the Host header: a certificate for another name fails the attempt."""
    ca = trustme.CA()
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.test").configure_cert(server_side)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    receiver = receivers(server_side)
    dns.point("hooks.test", "127.0.0.1")
    dns.point("impostor.test", "127.0.0.1")
    live = live_apps.start(webhook_max_attempts=1)
    key = new_project(live, tmp_path)
    good = register(live, key, f"https://hooks.test:{receiver.port}/hooks", receiver)
    cancelled_job(live, key)

    [request] = receiver.wait_for(1)
    assert request.signature_ok and request.headers["host"] == f"hooks.test:{receiver.port}"
    assert settled_delivery(live, key, good)["status"] == "delivered"

    bad = register(live, key, f"https://impostor.test:{receiver.port}/hooks")
    cancelled_job(live, key)
    failed = settled_delivery(live, key, bad)
    assert failed["last_error"] == "connect_error: could not connect to the endpoint"
    # The second event reached the good endpoint too; nothing arrived for the impostor.
    assert {r.headers["host"] for r in receiver.wait_for(2)} == {f"hooks.test:{receiver.port}"}


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("::ffff:7f00:1", "loopback"),
        ("::ffff:8.8.8.8", None),
        ("169.254.169.254", "link-local"),
        ("fd00:ec2::254", "private"),
        ("192.0.2.1", "private"),
        ("255.255.255.255", "reserved"),
        ("::", "unspecified"),
        ("ff02::1", "multicast"),
        ("2002:0a00:0001::", "private"),
        ("64:ff9b::808:808", None),
    ],
)
def test_forbidden_kind_names_what_an_address_is(address: str, kind: str | None) -> None:
    assert forbidden_kind(ipaddress.ip_address(address)) == kind


def test_an_allowed_name_may_resolve_anywhere_and_an_unresolved_name_says_so() -> None:
    answers = {"hooks.corp": [ipaddress.ip_address("10.0.0.9")]}

    def resolver(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        if host not in answers:
            raise OSError("no such name")
        return answers[host]

    policy = TargetPolicy.from_entries(["hooks.corp"], resolver)
    target = policy.resolve("https://hooks.corp/x")
    assert (target.host, target.port, str(target.address)) == ("hooks.corp", 443, "10.0.0.9")
    with pytest.raises(UnresolvedTarget, match=r"'nowhere\.corp' does not resolve"):
        policy.resolve("http://nowhere.corp/x")
    answers["alias.corp"] = answers["hooks.corp"]
    with pytest.raises(ForbiddenTarget, match=r"'alias\.corp' resolves to a private address"):
        policy.resolve("http://alias.corp:8080/x")


def test_the_allow_list_setting_takes_commas_or_json_and_refuses_what_is_neither(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALIGND_WEBHOOK_ALLOWED_HOSTS", " Hooks.Corp., 10.8.0.0/16,127.0.0.1 ")
    assert Settings().webhook_allowed_hosts == ["hooks.corp", "10.8.0.0/16", "127.0.0.1"]
    monkeypatch.setenv("ALIGND_WEBHOOK_ALLOWED_HOSTS", '["hooks.corp", "fd00::/8"]')
    assert Settings().webhook_allowed_hosts == ["hooks.corp", "fd00::/8"]
    monkeypatch.setenv("ALIGND_WEBHOOK_ALLOWED_HOSTS", "http://hooks.corp/x")
    with pytest.raises(ValidationError, match="neither a host name nor a network"):
        Settings()
