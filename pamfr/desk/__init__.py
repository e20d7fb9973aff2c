"""The identity-vigilance desk: server-rendered pages under /desk on the HTTP port
(docs/desk.md)."""
