"""A throwaway certificate authority for the fakes that must speak HTTPS.

msal accepts nothing but https for the authority, so the fake identity authority
(and, to prove `SSL_CERT_FILE` is honoured everywhere, the fake Graph) serve TLS
with a certificate for 127.0.0.1 issued by a CA that exists only for the test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TestCA:
    """PEM files on disk: point `SSL_CERT_FILE` at `ca_file`; give uvicorn the rest."""

    __test__ = False  # not a test class, whatever its name says

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path) -> TestCA:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        ca_file = directory / "ca.pem"
        cert_file = directory / "server-chain.pem"
        key_file = directory / "server-key.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        server.private_key_pem.write_to_path(str(key_file))
        # uvicorn wants the leaf and any intermediates in one file.
        cert_file.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        return cls(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
