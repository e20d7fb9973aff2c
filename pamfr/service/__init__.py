"""pamfr as a running service: the daemon and its doors, configuration, logging, listener
security, reload, systemd notification, health and metrics."""
