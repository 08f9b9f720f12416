"""What every service runs on: the service base, its database, health and metrics."""
