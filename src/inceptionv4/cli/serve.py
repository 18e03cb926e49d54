"""``inceptionv4 serve``: its flags are :class:`~inceptionv4.serve.settings.ServeSettings` and the
session flags, each generated from its record."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..serve.settings import ServeSettings
from .args import add_settings, given
from .infer import add_explain_flags, add_session_flags, check_weights, explain_options, open_from_flags, session_options

ENDPOINTS = "the page at /, POST /v1/predict, POST /v1/explain, GET /v1/model, /health, /metrics, /docs, the KServe v2 protocol at /v2; Ctrl-C stops"


def register(sub) -> None:
    p = sub.add_parser("serve", help="an HTTP server: POST an image, get its top-k classes (requests batched)")
    add_settings(p, ServeSettings)
    add_session_flags(p, workers=False)
    add_explain_flags(p)
    p.add_argument("--quiet", action="store_true", help="no access log, warnings only")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    settings = ServeSettings(**given(args, ServeSettings))
    if args.quiet:
        settings = dataclasses.replace(settings, access_log=False)
    if settings.workers > 1:
        return _serve_workers(args, settings)
    import signal

    from ..serve.server import InferenceServer

    session = open_from_flags(args, args.weights)
    print(f"loaded {len(session.runners)} model(s) ({session.backend} {session.precision}); warming up ...",
          file=sys.stderr)  # fmt: skip
    server = InferenceServer(session, settings, explain=explain_options(args), explain_weights=args.explain_weights or None)
    info = server.classifier.describe()
    grpc = f"; the v2 protocol over gRPC on port {server.grpc_port}" if server.grpc_port is not None else ""
    print(f"serving {info['architecture']} ({info['backend']} {info['precision']}, {info['form']}, "
          f"{info['num_classes']} classes, batches of up to {info['max_batch']}) at {server.url}: {ENDPOINTS}{grpc}",
          file=sys.stderr, flush=True)  # fmt: skip
    # uvicorn stops gracefully on SIGINT / SIGTERM (docker stop, systemd, kill), then sends the
    # signal again to the handler before it: SIGTERM's must then not kill the process
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    print("stopped", file=sys.stderr)
    return 0


def _serve_workers(args: argparse.Namespace, settings: ServeSettings) -> int:
    from ..serve.server import serve_workers

    def announce(url: str, card: dict) -> None:
        print(f"serving {card['architecture']} ({card['backend']} {card['precision']}) with {settings.workers} "
              f"worker processes at {url}: {ENDPOINTS}", file=sys.stderr, flush=True)  # fmt: skip

    serve_workers(check_weights(args.weights), session_options(args), settings, announce=announce,
                  explain=explain_options(args), explain_weights=args.explain_weights or None)  # fmt: skip
    print("stopped", file=sys.stderr)
    return 0
