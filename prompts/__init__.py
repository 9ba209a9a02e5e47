"""spp.prompts."""
