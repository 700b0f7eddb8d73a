"""Token audiences: every name of the pool on any port, the peer region's, nothing else."""

from __future__ import annotations

from openmhsm.auth.audiences import Audiences


def test_the_pools_names_on_any_port() -> None:
    accepted = Audiences(["127.0.0.1", "hsm1.example.com", "::1"])
    assert accepted("https://0.0.1:8443")
    assert accepted("https://0.0.1:19443/")  # a front door's port
    assert accepted("https://example.com:8443") and accepted("https://example.com")
    assert accepted("https://[::1]:8443")
    assert not accepted("https://other.org:8443")
    assert not accepted("https://0.0.1:84x3") and not accepted("https://0.0.1:")
    assert not accepted("https://evil.example.com:8443") and not accepted("")


def test_the_peer_region_only_while_linked() -> None:
    accepted = Audiences(["hsm-a.example.com"])
    assert not accepted("https://region-b.org:9443")
    accepted.trust_peer("https://hsm.region-b.org:9443")
    assert accepted("https://region-b.org:9443")
    assert not accepted("https://region-b.org:9444")
    accepted.trust_peer(None)
    assert not accepted("https://region-b.org:9443")
