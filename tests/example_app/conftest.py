"""The example app's suite runs in a pytest process of its own, as the app's CI would run it
(``tests/test_pytest_plugin.py`` does that with pytester), not inside streamchat's own run."""

collect_ignore_glob = ["test_*.py"]
