"""Start the application from a Serve config file, as `serve run <file>` does, with overrides.

`gleam serve`, the tests and the benchmarks all go through here, so the config file that ships is the one
that gets exercised: its deployments' autoscaling, resources and health checks are applied by Serve's
controller exactly as in production, and only what the caller names (args, host, port, a deployment's
options) is replaced.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml

from gleam import driver_logs, runtime_env, storage
from gleam.errors import RefusedError

DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.yaml"
APP_NAME = "gleam"


class ServeStartError(RefusedError, RuntimeError):
    """The application did not reach RUNNING; the message carries Serve's own reason."""


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def load_config(
    path: str | Path = DEFAULT_CONFIG,
    args: dict[str, Any] | None = None,
    host: str | None = None,
    port: int | None = None,
    deployments: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The config file as a dict, with `args` merged into the application's and options replaced."""
    config = yaml.safe_load(Path(path).read_text())
    application = config["applications"][0]
    application["args"] = _merge(application.get("args") or {}, args or {})
    http = config.setdefault("http_options", {})
    if host is not None:
        http["host"] = host
    if port is not None:
        http["port"] = port
    for name, options in (deployments or {}).items():
        listed = [d for d in application.setdefault("deployments", []) if d["name"] == name]
        if listed:
            listed[0].update(_merge(listed[0], options))
        else:
            application["deployments"].append({"name": name, **options})
    return config


def start(config: dict[str, Any], timeout_s: float = 300.0) -> str:
    """Deploy `config` on the connected Ray cluster (starting Serve if needed); returns the base URL."""
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    from gleam.config import expand_env

    config = copy.deepcopy(config)
    for application in config["applications"]:  # the driver's locations, for the builder and every replica
        env = application.setdefault("runtime_env", {}).setdefault("env_vars", {})
        env.update(runtime_env.resolved())
        args = expand_env(application.get("args") or {})
        if args.get("store"):
            args["store"] = storage.normalize(args["store"])
        application["args"] = args
    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
    )
    driver_logs.reroute()  # Serve gives its driver logger a console handler: quiet consoles keep quiet
    client.deploy_apps(schema, _blocking=False)
    name = schema.applications[0].name
    wait_running(name, timeout_s)
    host = schema.http_options.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    prefix = (schema.applications[0].route_prefix or "/").rstrip("/")
    return f"http://{host}:{schema.http_options.port}{prefix}"


def wait_running(name: str = APP_NAME, timeout_s: float = 300.0) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        app = serve.status().applications.get(name)
        status = app.status if app else None
        if status == "RUNNING":
            return
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise ServeStartError(f"application {name} is {status}: {app.message}")
        time.sleep(0.5)
    raise ServeStartError(f"application {name} not RUNNING after {timeout_s:.0f}s (last status {status})")


def run_until_interrupted(
    config_path: str | Path | None,
    args: dict[str, Any],
    overrides: list[str],
    host: str,
    port: int,
    console: Any,
) -> None:
    """`gleam serve`: start locally (joining RAY_ADDRESS when set) and keep serving until Ctrl-C."""
    import signal

    from ray import serve

    from gleam.cluster import init_ray
    from gleam.config import apply_override, expand_env, parse_config
    from serve.settings import ServeArgs

    config = load_config(config_path or DEFAULT_CONFIG, args, host, port)
    application = config["applications"][0]
    for assignment in overrides:
        apply_override(application["args"], assignment)
    parse_config(ServeArgs, expand_env(application["args"]), "serve args")  # fail here, naming the field
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    init_ray()
    try:  # Ctrl-C at any point, even while the application is still starting, stops it cleanly
        url = start(config)
        console.print(f"GLEAM is serving at [bold]{url}/[/]  (API docs {url}/docs, health {url}/healthz)")
        console.print("Ctrl-C stops it.")
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping...")
        serve.shutdown()
