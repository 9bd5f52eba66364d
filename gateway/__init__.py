"""Security gateway for hotel and booking systems."""
