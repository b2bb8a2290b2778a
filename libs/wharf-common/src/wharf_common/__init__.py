"""Code shared by the Wharf services (kept small on purpose)."""
