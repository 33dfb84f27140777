"""Tools: registry, marketplace, installs into companies."""
