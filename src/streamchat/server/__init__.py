"""The HTTP server (``streamchat serve``): the ``[server]`` extra, checked here so that importing
any part of it without that extra is one line naming the install, not a missing-module error
from deep inside."""

from .._extras import require

require("server", "streamchat.server")
