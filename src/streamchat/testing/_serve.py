"""``streamchat ARGS`` with the server's fault decisions also written to a file.

The fault injector logs each request's decision (``request 3: overload``) at debug level to the
``streamchat.faults`` logger, which a plain ``serve`` does not show. The test bench runs the
same CLI through this module so a test can read what was injected from the server itself.
"""

from __future__ import annotations

import logging
import os
import sys

FAULT_LOG_ENV = "STREAMCHAT_TESTING_FAULT_LOG"


def main() -> int:
    path = os.environ.pop(FAULT_LOG_ENV, None)
    if path:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger("streamchat.faults")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        logger.propagate = False
    from streamchat.cli.main import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
