"""Ray job entrypoint: build a GLEAM-X explanation set (`python jobs/explain_data.py --config FILE`).

Same arguments as `gleam explain-data` (`--config`, `--set k=v`); kept as a file so `ray job submit --
python jobs/explain_data.py ...` and KubeRay RayJob entrypoints need no console script on the image.
"""

import sys

from gleam_cli.main import main

if __name__ == "__main__":
    main(["explain-data", *sys.argv[1:]])
