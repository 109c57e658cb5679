"""CLI subcommands, one module each (discovered by porting.cli)."""
