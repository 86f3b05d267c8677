"""The local profile: stand-ins on this machine for what a tenant has (model, services)."""
