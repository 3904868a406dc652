"""Throwaway certificates for TLS tests, made with the ``openssl`` command line.

``make_pki(dir)`` writes a CA, a server certificate for 127.0.0.1/localhost
and a client certificate, all signed by that CA, plus a second, unrelated CA
(for "a client that does not trust the server" and "a client certificate the
server does not trust"). Keys are P-256; certificates live two days.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from me2_devkit.testing.servers import ServerStartError, find_binary

_KEY_ARGS = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
_LEAF_EXTENSIONS = (
    "basicConstraints=CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
)


@dataclass(frozen=True)
class Pair:
    """A PEM certificate and its PEM private key, as file paths."""

    cert: str
    key: str


@dataclass(frozen=True)
class Pki:
    """What ``make_pki`` wrote."""

    ca: Pair
    server: Pair
    client: Pair
    other_ca: Pair
    other_client: Pair  # signed by other_ca


def _openssl(*args: str) -> None:
    done = subprocess.run(
        [find_binary("openssl"), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise ServerStartError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


def make_ca(directory: Path, name: str) -> Pair:
    """A self-signed CA named ``name``."""
    pair = Pair(str(directory / f"{name}.pem"), str(directory / f"{name}.key"))
    output = ["-keyout", pair.key, "-out", pair.cert, "-days", "2", "-subj", f"/CN={name}"]
    constraints = ["-addext", "basicConstraints=critical,CA:TRUE"]
    usage = ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    _openssl("req", "-x509", *_KEY_ARGS, *output, *constraints, *usage)
    return pair


def make_leaf(directory: Path, name: str, ca: Pair) -> Pair:
    """A certificate for 127.0.0.1 and localhost, usable by a server and a client."""
    pair = Pair(str(directory / f"{name}.pem"), str(directory / f"{name}.key"))
    csr, extensions = directory / f"{name}.csr", directory / f"{name}.ext"
    extensions.write_text(_LEAF_EXTENSIONS)
    _openssl("req", *_KEY_ARGS, "-keyout", pair.key, "-out", str(csr), "-subj", f"/CN={name}")
    signer = ["-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial"]
    output = ["-out", pair.cert, "-days", "2", "-extfile", str(extensions)]
    _openssl("x509", "-req", "-in", str(csr), *signer, *output)
    return pair


def make_pki(directory: Path) -> Pki:
    """A CA with a server and a client certificate, and an unrelated CA with a client."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = make_ca(directory, "ca"), make_ca(directory, "other-ca")
    return Pki(
        ca=ca,
        server=make_leaf(directory, "server", ca),
        client=make_leaf(directory, "client", ca),
        other_ca=other,
        other_client=make_leaf(directory, "other-client", other),
    )
