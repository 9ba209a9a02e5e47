"""spp.registry: a versioned, content-addressed store of prompt artifacts.

    reg = Registry()                      # $SPP_REGISTRY, else $SPP_HOME, else a per-user dir
    reg = Registry("postgresql://spp@db/prompts?store=s3://bucket/prompts")  # shared by many hosts
    version, created = reg.publish("rte.safetensors", aliases=["prod"])
    version, artifact = reg.load("rte@prod")

Importing this package does not import torch; reading or writing an artifact does.
"""

from spp.registry.core import HOME_ENV, Registry, default_root
from spp.registry.location import LOCATION_ENV, Location, LocationError, mask, parse_location
from spp.registry.errors import IntegrityError, NotFoundError, PublishError, RegistryError, UnavailableError
from spp.registry.index import Version
from spp.registry.refs import Ref, check_alias, check_name, parse_ref, parse_tags

__all__ = [
    "HOME_ENV",
    "LOCATION_ENV",
    "Location",
    "LocationError",
    "mask",
    "parse_location",
    "IntegrityError",
    "NotFoundError",
    "PublishError",
    "Ref",
    "Registry",
    "RegistryError",
    "UnavailableError",
    "Version",
    "check_alias",
    "check_name",
    "default_root",
    "parse_ref",
    "parse_tags",
]
