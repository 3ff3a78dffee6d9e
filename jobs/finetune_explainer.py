"""Ray job entrypoint: fine-tune GLEAM-X (`python jobs/finetune_explainer.py --config FILE [--set k=v]`).

Same arguments as `gleam finetune-explainer`; kept as a file so `ray job submit -- python
jobs/finetune_explainer.py ...` and KubeRay RayJob entrypoints need no console script on the image.
"""

import sys

from gleam_cli.main import main

if __name__ == "__main__":
    main(["finetune-explainer", *sys.argv[1:]])
