"""TLS credentials for the gRPC server, the Action/Diary clients and the etcd client.

Plaintext stays the default, as in go-zero: TLS is on only when a certificate
or CA file is configured. Files are PEM. The server asks for client
certificates (mutual TLS) exactly when it is given a CA file to check them
with. A file that cannot be read is a ``ConfigError`` naming its key, so the
start stops with that key in the message.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from me2_scheduler.errors import ConfigError


def read_pem(path: str, key: str) -> bytes:
    """The bytes of a PEM file; raise ``ConfigError(key, ...)`` when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(key, f"{path} is not a PEM file")
    return data


def server_credentials(
    cert_file: str, key_file: str, ca_file: str = "", *, prefix: str = ""
) -> grpc.ServerCredentials:
    """Server credentials from a certificate and its key; with ``ca_file``, mutual TLS.

    With a CA file every client must present a certificate signed by it.
    ``prefix`` is the config path of the keys, for messages. Raises ``ConfigError``.
    """
    chain = read_pem(cert_file, f"{prefix}CertFile")
    key = read_pem(key_file, f"{prefix}KeyFile")
    ca = read_pem(ca_file, f"{prefix}CACertFile") if ca_file else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
    )


def channel_credentials(
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
    *,
    prefix: str = "",
    key_name: str = "KeyFile",
) -> grpc.ChannelCredentials:
    """Client credentials: trust ``ca_file`` (else the system roots); show a cert if given.

    ``prefix`` and ``key_name`` name the config keys in messages (etcd calls
    its key file ``CertKeyFile``). Raises ``ConfigError``.
    """
    ca = read_pem(ca_file, f"{prefix}CACertFile") if ca_file else None
    chain = read_pem(cert_file, f"{prefix}CertFile") if cert_file else None
    key = read_pem(key_file, f"{prefix}{key_name}") if key_file else None
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=chain
    )


def secure_channel(
    target: str, credentials: grpc.ChannelCredentials | None, options: tuple
) -> grpc.Channel:
    """A TLS channel when ``credentials`` are given, else a plaintext one."""
    if credentials is None:
        return grpc.insecure_channel(target, options)
    return grpc.secure_channel(target, credentials, options)
