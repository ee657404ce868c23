"""The `constellation` command line: a client of the gateway, nothing more (it imports no server code)."""
