"""Ray job entrypoint: prepare raw corpora (`python jobs/prepare.py --config FILE [--set k=v]`).

Same arguments as `gleam prepare`; kept as a file so `ray job submit -- python jobs/prepare.py ...` and
KubeRay RayJob entrypoints need no console script on the image.
"""

import sys

from gleam_cli.main import main

if __name__ == "__main__":
    main(["prepare", *sys.argv[1:]])
