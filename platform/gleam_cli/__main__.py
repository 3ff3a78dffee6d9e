"""`python -m gleam_cli ...` runs the `gleam` command."""

from gleam_cli.main import main

if __name__ == "__main__":
    main()
