"""A custom engine with its own config keys, registered by type name and used from settings."""
