"""Provider backends: one module per provider, loaded lazily by type."""
