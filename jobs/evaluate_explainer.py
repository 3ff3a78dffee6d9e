"""Ray job entrypoint: evaluate GLEAM-X on an explanation set (`python jobs/evaluate_explainer.py -c FILE`).

Same arguments as `gleam evaluate-explainer`; kept as a file so `ray job submit -- python
jobs/evaluate_explainer.py ...` and KubeRay RayJob entrypoints need no console script on the image.
"""

import sys

from gleam_cli.main import main

if __name__ == "__main__":
    main(["evaluate-explainer", *sys.argv[1:]])
