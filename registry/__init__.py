"""spp.registry."""
