"""Runs moto's server (`moto_server`'s arguments: -H HOST -p PORT) with what AWS does and plain moto does not:

- a presigned request (no Authorization header; its credential scope in the X-Amz-Credential query
  parameter) goes to the service its scope names, as AWS routes it — plain moto sends it to S3. EKS bearer
  tokens are presigned STS GetCallerIdentity URLs, which the Kubernetes API test server checks here.
- an EKS cluster's certificate authority is a real base64 PEM certificate (moto's is random text, which no
  Kubernetes client accepts), and with UPDRAFT_MOTO_EKS_ENDPOINT set, clusters' endpoints point there (the
  Kubernetes API test server), since moto serves EKS's control plane only.
- SageMaker, AWS Batch, EMR Serverless and Athena jobs that are queued, run, complete, fail on demand and
  stop, publishing their state changes to EventBridge when asked: see `lifecycles.py`.
"""

import base64
import datetime
import os
import sys
import urllib.parse

import lifecycles

from moto.moto_server import werkzeug_app
from moto.server import main

_infer = werkzeug_app.DomainDispatcherApplication.infer_service_region_host


def _infer_presigned(self, environ, path):
    if not environ.get("HTTP_AUTHORIZATION"):
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        scope = query.get("X-Amz-Credential")
        if scope:
            environ = dict(environ)
            environ["HTTP_AUTHORIZATION"] = (
                f"AWS4-HMAC-SHA256 Credential={scope[0]}, SignedHeaders=host, Signature=presigned"
            )
    return _infer(self, environ, path)


werkzeug_app.DomainDispatcherApplication.infer_service_region_host = _infer_presigned


def _certificate_pem() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _patch_eks() -> None:
    from moto.eks import models

    ca = base64.b64encode(_certificate_pem()).decode()
    endpoint = os.environ.get("UPDRAFT_MOTO_EKS_ENDPOINT")
    init = models.Cluster.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.certificate_authority = {"data": ca}
        if endpoint:
            self.endpoint = endpoint

    models.Cluster.__init__ = __init__


_patch_eks()
lifecycles.install()

def _own_url(argv: list[str]) -> str:
    host, port = "127.0.0.1", "5000"
    for i, a in enumerate(argv):
        if a in ("-H", "--host") and i + 1 < len(argv):
            host = argv[i + 1]
        if a in ("-p", "--port") and i + 1 < len(argv):
            port = argv[i + 1]
    return f"http://{host}:{port}"


if __name__ == "__main__":
    # what jobs that run as local processes reach as their AWS (see lifecycles.py, run_commands)
    os.environ.setdefault("UPDRAFT_MOTO_URL", _own_url(sys.argv[1:]))
    sys.exit(main())
