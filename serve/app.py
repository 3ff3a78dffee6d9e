"""The GLEAM application builder: `serve run serve/config.yaml`, or `serve run serve.app:app key=value`.

Arguments may use `${VAR:-default}`, nested (e.g. `store: ${GLEAM_STORE:-${GLEAM_HOME:-.gleam}/store}`),
so one config file serves every environment. The encoder is pinned before any replica starts:
`models:/gleam-c@champion` becomes `models:/gleam-c/<N>`, so replicas started by the autoscaler an hour
later load the same weights the index was checked against, even if the alias has moved since.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from gleam import runtime_env
from gleam.config import expand_env, parse_config
from gleam.model import weights
from serve.encoder import QueryEncoder
from serve.explainer import Explainer
from serve.index import SatelliteIndex
from serve.ingress import Ingress
from serve.settings import ServeArgs


def build(args: ServeArgs) -> Application:
    # resolved here, once, and handed to every replica: a replica (started by the autoscaler, maybe on
    # another node) must find the same store, registry and caches (gleam.runtime_env)
    locations = runtime_env.pin()
    pinned, fingerprint = weights.pin(args.encoder)
    index = SatelliteIndex.bind(
        args.store, args.index, fingerprint, args.index_version, args.poll_seconds, locations
    )
    # /v1/localize: the encoder searches its batches itself (the same SatelliteIndex class in the
    # replica) or sends them to the SatelliteIndex deployment, one call per batch (`colocated_search`)
    search = {
        "store": args.store,
        "name": args.index,
        "fingerprint": fingerprint,
        "version": args.index_version,
        "poll_seconds": args.poll_seconds,
    }
    encoder = QueryEncoder.bind(
        pinned,
        fingerprint,
        args.batching.model_dump(),
        locations,
        search if args.colocated_search else None,
        None if args.colocated_search else index,
    )
    explainer = Explainer.bind(args.explainer.model_dump(), locations)
    return Ingress.bind(encoder, index, explainer, args.model_dump())


def app(args: dict[str, Any]) -> Application:
    """Serve's entry point: validates `args` (a bad one names its field) and builds the application."""
    return build(parse_config(ServeArgs, expand_env(dict(args or {})), "serve args"))
