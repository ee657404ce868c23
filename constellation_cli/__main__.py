"""`python -m constellation_cli`, the same as the `constellation` command."""

from constellation_cli.main import main

raise SystemExit(main())
