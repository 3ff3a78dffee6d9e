"""Ray job entrypoint: render the synthetic world (`python jobs/world.py --output URI --locations N`)."""

import sys

from gleam_cli.main import main

if __name__ == "__main__":
    main(["world", *sys.argv[1:]])
