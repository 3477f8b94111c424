"""``manage.py witness_serve --bind HOST:PORT``: the dedicated witness server
(:mod:`ledger.witness_server`), ``POST /add-checkpoint`` only. SIGTERM stops it cleanly."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ledger import conf


class Command(BaseCommand):
    help = "Serve this node's witness (POST /add-checkpoint) with group commit."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8001", help="HOST:PORT to listen on")
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="processes sharing the socket (default 1: one process uses one core)",
        )

    def handle(self, *args, bind: str, workers: int, **options) -> None:
        host, sep, port = bind.rpartition(":")
        if not sep or not port.isdigit():
            raise CommandError(f"--bind is HOST:PORT, not {bind!r}")
        if not conf.witness_name():
            # Served anyway (every request answered 404, as the node's own endpoint does), so a
            # supervisor that starts it on every node does not restart it in a loop.
            self.stderr.write("LEDGER_WITNESS_NAME is not set: every request is answered 404")
        from ledger import witness_server

        witness_server.run(host.strip("[]") or "0.0.0.0", int(port), workers=workers)  # noqa: S104
