"""API keys, TLS and allowed hosts: the server's security settings, end to end."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from spp.prompts.errors import ConfigError
from spp.serve.app import create_app

KEY = "k3y-" + "a1B2c3D4e5F6g7H8" * 2
OTHER = "other-" + "Z9y8X7w6V5u4T3s2"
WRONG = KEY[:-1] + "X"


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def secured(world, make_settings):
    with TestClient(create_app(make_settings(api_keys=(KEY, OTHER))), raise_server_exceptions=False) as c:
        yield c


def _unauthorized(r, *, invalid_token: bool) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized" and r.json()["status"] == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and ('error="invalid_token"' in challenge) == invalid_token
    assert KEY not in r.text and WRONG not in r.text


@pytest.mark.parametrize("method, path", [("post", "/predict?task=sentiment"), ("get", "/tasks"), ("get", "/metrics")])
def test_no_key_and_a_wrong_key_get_401_the_right_key_200(secured, method, path):
    send = getattr(secured, method)
    body = {"json": {"texts": ["great"]}} if method == "post" else {}
    _unauthorized(send(path, **body), invalid_token=False)
    _unauthorized(send(path, headers=_auth(WRONG), **body), invalid_token=True)
    _unauthorized(send(path, headers={"authorization": f"Basic {KEY}"}, **body), invalid_token=False)
    for key in (KEY, OTHER):  # every configured key works
        assert send(path, headers=_auth(key), **body).status_code == 200


def test_auth_is_checked_before_the_body_is_read(secured):
    r = secured.post("/predict?task=sentiment", content=b"[" * 5000, headers={"content-type": "text/plain"})
    _unauthorized(r, invalid_token=False)


def test_health_ready_and_the_schema_stay_open(secured):
    assert secured.get("/health").status_code == 200 and secured.get("/ready").status_code == 200
    schema = secured.get("/schema/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schema["paths"]["/predict"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_metrics_can_be_left_open_for_a_scraper(world, make_settings):
    with TestClient(create_app(make_settings(api_keys=KEY, metrics_auth=False))) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/tasks").status_code == 401


def test_without_keys_nothing_asks_for_one(client):
    assert client.get("/tasks").status_code == 200 and client.get("/metrics").status_code == 200
    assert "securitySchemes" not in client.get("/schema/openapi.json").json()["components"]


def test_keys_never_reach_the_logs(world, make_settings, run_uvicorn, kit, caplog, capfd):
    """The most verbose logging there is (uvicorn trace: every ASGI message), keys never in it."""
    caplog.set_level(1)
    settings = make_settings(port=kit.free_port(), api_keys=(KEY,), log_level="trace")
    assert KEY not in repr(settings)
    url, *_ = run_uvicorn(settings)
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/predict?task=sentiment", json={"texts": ["x"]}, headers=_auth(KEY)).status_code == 200
        assert http.post("/predict?task=sentiment", json={"texts": ["x"]}, headers=_auth(WRONG)).status_code == 401
        assert http.get("/tasks", headers={"authorization": f"Bearer {WRONG} trailing"}).status_code == 401
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "POST /predict" in logged or "/predict" in logged  # the requests were logged...
    assert KEY not in logged and WRONG not in logged  # ...their keys were not


def test_key_file_and_key_rules(tmp_path: Path, make_settings):
    keys = tmp_path / "keys"
    keys.write_text(f"# team A\n{KEY}\n\n  {OTHER}  \n{KEY}\n")
    keys.chmod(0o600)
    s = make_settings(api_key_file=keys, api_keys="env-key-0123456789abcdef")
    assert s.api_keys == ("env-key-0123456789abcdef", KEY, OTHER)
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n")
    for kwargs, fragment in [
        (dict(api_key_file=empty), "holds no key"),
        (dict(api_key_file=tmp_path / "missing"), "cannot read api_key_file"),
        (dict(api_key_file=tmp_path), "not a regular file"),
        (dict(api_keys="short"), "API key #1 is invalid"),
        (dict(api_keys=[KEY, "has space in it 0123456789"]), "API key #2 is invalid"),
    ]:
        with pytest.raises(ConfigError, match=fragment) as info:
            make_settings(**kwargs)
        assert "short" not in str(info.value) and "has space" not in str(info.value)  # never echo a key


def test_tls_and_allowed_host_settings_are_checked(tmp_path: Path, make_settings):
    with pytest.raises(ConfigError, match="give both or neither"):
        make_settings(ssl_certfile=tmp_path / "c.pem")
    with pytest.raises(ConfigError, match="no such file"):
        make_settings(ssl_certfile=tmp_path / "c.pem", ssl_keyfile=tmp_path / "k.pem")
    with pytest.raises(ConfigError, match="allowed_hosts"):
        make_settings(allowed_hosts=("spp.*.org",))
    with pytest.raises(ConfigError, match="body_timeout_s"):
        make_settings(body_timeout_s=0)


def test_allowed_hosts(world, make_settings):
    app = create_app(make_settings(allowed_hosts="spp.example.org,*.internal"))
    with TestClient(app, base_url="http://spp.example.org") as c:
        assert c.get("/tasks").status_code == 200
        assert c.get("/tasks", headers={"host": "a.internal"}).status_code == 200
        refused = c.get("/tasks", headers={"host": "evil.example.com"})
        assert refused.status_code == 400 and "invalid host header" in refused.text
        assert c.post("/predict?task=sentiment", json={"texts": ["x"]}, headers={"host": "evil"}).status_code == 400
        assert c.get("/health", headers={"host": "10.0.0.7"}).status_code == 200  # load-balancer probes
        assert c.get("/ready", headers={"host": "10.0.0.7"}).status_code == 200


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made here (cryptography), valid for one day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_with_a_self_signed_certificate(world, make_settings, run_uvicorn, kit, tmp_path: Path):
    cert, key = _self_signed(tmp_path)
    settings = make_settings(port=kit.free_port(), ssl_certfile=cert, ssl_keyfile=key, api_keys=KEY,
                             log_level="warning")
    url, *_ = run_uvicorn(settings, scheme="https")
    trust = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=url, verify=trust, timeout=30) as https:
        assert https.get("/health").status_code == 200
        r = https.post("/predict?task=sentiment", json={"texts": ["great"]}, headers=_auth(KEY))
        assert r.status_code == 200 and r.json()["prompt"] == "sentiment@1"
    with pytest.raises(httpx.ConnectError):  # an unknown certificate is refused by a verifying client
        httpx.get(f"{url}/health", timeout=10)
    with pytest.raises(httpx.HTTPError):  # and plain HTTP gets no answer
        httpx.get(url.replace("https", "http") + "/health", timeout=10)
