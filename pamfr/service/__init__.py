"""pamfr as a running service: the daemon and its doors, listener
security, reload, systemd notification, health and metrics."""
