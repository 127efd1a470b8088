"""Certificates and keys (see `secreg.tls.certificates`)."""

from secreg.tls.certificates import *  # noqa: F403
from secreg.tls.certificates import __all__ as __all__
