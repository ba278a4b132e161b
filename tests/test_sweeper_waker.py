"""The sweeper waker calls a private sweeper: with `sweeper.auth = gcp` its POST carries a Google ID
token for the sweeper URL, minted from the instance's identity (the metadata server), the way
the `gcp` push auth mints them; without it (`none`, the default) no credentials are sent.

Offline: a fake metadata server mints the tokens and a fake sweeper checks them as Cloud Run's
invoker check does (signature, audience = the URL it was called at, issuer, email), with the
loopback stand-ins of tests/support/fake_google_oidc.py.
"""
from __future__ import annotations

import pytest

from shared.config import ConfigError, load
from shared.delivery.push_auth import GoogleIdTokens
from shared.records import Effects
from shared.runtime import Runtime
from tests.support.fake_google_oidc import FakeMetadata, Issuer, Worker
from tests.support.wait import wait_until

pytestmark = pytest.mark.process  # loopback HTTP servers (fake metadata server, fake sweeper)


@pytest.fixture
def google(monkeypatch):
    """A fake metadata server (GCE_METADATA_HOST) and a sweeper that admits only valid ID tokens."""
    issuer = Issuer()
    md, sweeper = FakeMetadata(issuer).start(), Worker(issuer).start()
    monkeypatch.setenv("GCE_METADATA_HOST", md.host)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)  # ADC: the metadata server
    yield md, sweeper
    md.stop()
    sweeper.stop()


def serverless(sweeper_url: str, **env: str) -> Runtime:
    """An api instance as the functions build it: no background loops, so a near deadline wakes
    the sweeper at `sweeper_url`."""
    cfg = load(env={"RESONATE_STORAGE__TYPE": "memory", "RESONATE_SWEEPER__URL": sweeper_url, **env})
    return Runtime(cfg, background=False, metrics=False)


def wake(rt: Runtime) -> None:
    """A commit that wrote a deadline a second away, with no sweeper running."""
    assert rt.waker is not None
    rt.waker.on_effects(Effects(deadline=rt.service.clock.now() + 1000))


def test_wakes_a_private_sweeper_with_an_id_token_for_its_url(google):
    md, sweeper = google
    url = sweeper.url("/")
    rt = serverless(url, RESONATE_SWEEPER__AUTH="gcp")
    try:
        assert isinstance(rt.waker.auth, GoogleIdTokens) and rt.waker.auth.audience == url
        wake(rt)
        assert wait_until(lambda: sweeper.received, 30), "the sweeper was never called"
        call, = sweeper.received
        assert call.status == 200, call.headers  # the token passed the invoker check
        assert call.claims is not None and call.claims["aud"] == url
        assert md.hits == {url: 1}
    finally:
        rt.stop()


def test_without_sweeper_auth_no_credentials_are_sent(google):
    """The default (local runs, the cloud simulation): the call goes out bare, and a sweeper that
    requires a token refuses it, as the deployed one did before sweeper.auth existed."""
    md, sweeper = google
    rt = serverless(sweeper.url("/"))
    try:
        assert rt.waker.auth is None
        wake(rt)
        assert wait_until(lambda: sweeper.received, 30), "the sweeper was never called"
        call, = sweeper.received
        assert "authorization" not in call.headers and call.status == 401
        assert md.hits == {}
    finally:
        rt.stop()


def test_sweeper_auth_is_validated():
    with pytest.raises(ConfigError, match="sweeper.auth"):
        load(env={"RESONATE_SWEEPER__AUTH": "bearer"})
    assert load(env={}).sweeper.auth == "none"
