"""Ray job entrypoint: build and publish a satellite index (`python jobs/build_index.py --config FILE`).

Same arguments as `gleam index build` (`--incremental`, `--skip-if-busy`, `--set key=value`); kept as a
file so `ray job submit -- python jobs/build_index.py ...` and KubeRay RayJob/RayCronJob entrypoints need
no console script on the image.
"""

import sys

from gleam_cli.main import main

if __name__ == "__main__":
    main(["index", "build", *sys.argv[1:]])
