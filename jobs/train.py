"""Ray job entrypoint: train one GLEAM-C phase (`python jobs/train.py --config FILE [--set k=v]`).

Same arguments as `gleam train`; kept as a file so `ray job submit -- python jobs/train.py ...` and
KubeRay RayJob entrypoints need no console script on the image.
"""

import sys

from gleam_cli.main import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
