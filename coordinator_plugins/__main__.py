from coordinator_plugins.cli import main

raise SystemExit(main())
