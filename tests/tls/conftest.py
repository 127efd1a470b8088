from __future__ import annotations

from pathlib import Path

import pytest

from secreg import tls
from secreg.tls import CertificateFiles
from tests.tls.certs import HOSTS, IPS


@pytest.fixture
def files(tmp_path: Path) -> CertificateFiles:
    return tls.generate_certificates(tmp_path / "certs", HOSTS, IPS)
