"""spp.serve."""
