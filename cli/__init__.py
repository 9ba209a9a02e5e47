"""spp.cli."""
