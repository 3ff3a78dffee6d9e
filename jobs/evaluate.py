"""Ray job entrypoint: evaluate an encoder on a prepared split (`python jobs/evaluate.py --config FILE`).

Same arguments as `gleam evaluate` (`--index NAME` searches through a published index and reports
its gap to exact search); kept as a file so `ray job submit -- python jobs/evaluate.py ...` and
KubeRay RayJob entrypoints need no console script on the image.
"""

import sys

from gleam_cli.main import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
