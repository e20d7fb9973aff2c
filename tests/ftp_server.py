"""A real FTP server (pyftpdlib) on 127.0.0.1, in a process of its own as a GAM's FTP server
is: pamfr's own open handles never count as a writer, another process's do.

    python -m tests.ftp_server ROOT     prints the port it listens on, serves until killed
"""

from __future__ import annotations

import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

USER, PASSWORD = "gam", "secret"


class DirectFS(AbstractedFS):
    """Files written as vsftpd writes them: each block received goes to the file at once (no
    buffer in the server), so a pause leaves on disk exactly what was sent."""

    def open(self, filename, mode):
        return open(filename, mode, buffering=0)


def main(root: str) -> None:
    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, PASSWORD, root, perm="elradfmw")
    attributes = {"authorizer": authorizer, "banner": "test", "abstracted_fs": DirectFS}
    handler = type("Handler", (FTPHandler,), attributes)
    server = FTPServer(("127.0.0.1", 0), handler)
    print(server.socket.getsockname()[1], flush=True)
    server.serve_forever(timeout=0.1)


if __name__ == "__main__":
    main(sys.argv[1])
