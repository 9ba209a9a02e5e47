"""spp.registry: a versioned, content-addressed store of prompt artifacts with an SQLite index.

    reg = Registry()                      # --registry DIR, else $SPP_HOME, else a per-user dir
    version, created = reg.publish("rte.safetensors", aliases=["prod"])
    version, artifact = reg.load("rte@prod")

Importing this package does not import torch; reading or writing an artifact does.
"""

from spp.registry.core import HOME_ENV, Registry, default_root
from spp.registry.errors import IntegrityError, NotFoundError, PublishError, RegistryError
from spp.registry.index import Version
from spp.registry.refs import Ref, check_alias, check_name, parse_ref, parse_tags

__all__ = [
    "HOME_ENV",
    "IntegrityError",
    "NotFoundError",
    "PublishError",
    "Ref",
    "Registry",
    "RegistryError",
    "Version",
    "check_alias",
    "check_name",
    "default_root",
    "parse_ref",
    "parse_tags",
]
