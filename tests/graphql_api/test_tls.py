"""HTTPS and WSS through uvicorn's options: a real ``stepsaga serve --ssl-certfile
--ssl-keyfile`` with a certificate made for 127.0.0.1 in the test; a client trusting it
queries over HTTPS and subscribes over WSS, a browser's sign-in gets Secure cookies and
the responses Strict-Transport-Security; half a pair of files is refused at start."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..auth import bearer
from .wire import ROOT, Served


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_https_and_wss_with_secure_cookies(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    store = f"sqlite+aiosqlite:///{tmp_path}/s.sqlite"
    server = Served("serve", "--store", store, "--port", "0", "--ssl-certfile", str(cert),
                    "--ssl-keyfile", str(key))
    told = server.ready()
    try:
        url = told["url"]
        assert url.startswith("https://127.0.0.1:") and told["login_url"].startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=trusted, timeout=30) as client:
            answer = client.post(url, json={"query": "{ allSagas { name } }"},
                                 headers=bearer(told["token"]))
            assert answer.json() == {"data": {"allSagas": [{"name": "demo"}]}}
            assert answer.headers["strict-transport-security"] == "max-age=31536000"
            signed = client.post(url.removesuffix("/graphql") + "/auth/login",
                                 json={"token": told["token"]},
                                 headers={"Accept": "application/json"})
            cookies = signed.headers.get_list("set-cookie")
            assert cookies and all("Secure" in c for c in cookies), cookies
        with httpx.Client(timeout=30) as untrusting:  # a client that does not trust it
            try:
                untrusting.get(url.removesuffix("/graphql") + "/healthz")
                raise AssertionError("a certificate nobody vouched for was taken")
            except httpx.ConnectError as refused:
                assert "CERTIFICATE_VERIFY_FAILED" in str(refused)

        async def subscribed() -> str:
            async with websockets.connect(url.replace("https://", "wss://"), ssl=trusted,
                                          subprotocols=["graphql-transport-ws"],
                                          additional_headers=bearer(told["token"])) as sock:
                await sock.send(json.dumps({"type": "connection_init"}))
                return str(json.loads(await sock.recv())["type"])

        assert anyio.run(subscribed) == "connection_ack"
    finally:
        code, _, err = server.stop()
    assert code == 0, err


def test_half_a_pair_of_files_is_refused(tmp_path: Path) -> None:
    cert, _ = _certificate(tmp_path)
    done = subprocess.run([sys.executable, "-m", "graphql_api.cli", "serve", "--store",
                           f"sqlite+aiosqlite:///{tmp_path}/s.sqlite", "--ssl-certfile",
                           str(cert)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "--ssl-certfile and --ssl-keyfile go together" in done.stderr
