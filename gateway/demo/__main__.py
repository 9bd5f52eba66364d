"""Run the demo PMS on its own: `python -m gateway.demo --host 127.0.0.1 --port 8081`."""

from __future__ import annotations

import argparse

from aiohttp import web

from gateway.demo.app import DEMO_USERS, DemoSettings, create_app


def main(argv: list[str] | None = None) -> None:
    defaults = DemoSettings()
    parser = argparse.ArgumentParser(prog="python -m gateway.demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--property-name", default=defaults.property_name)
    parser.add_argument("--smtp-host", default=defaults.smtp_host)
    parser.add_argument("--smtp-port", type=int, default=defaults.smtp_port)
    parser.add_argument("--sms-api-url", default=defaults.sms_api_url)
    parser.add_argument("--http-proxy", default=None, help="egress proxy for the SMS API")
    parser.add_argument("--ca-file", default=None, help="CA bundle for HTTPS APIs")
    parser.add_argument("--public-url", default=defaults.public_url)
    parser.add_argument(
        "--session-idle-seconds", type=float, default=defaults.session_idle_seconds
    )
    parser.add_argument("--compress", action="store_true", help="gzip answers when the browser accepts it")
    args = parser.parse_args(argv)

    settings = DemoSettings(
        property_name=args.property_name,
        smtp_host=args.smtp_host,
        smtp_port=args.smtp_port,
        sms_api_url=args.sms_api_url,
        http_proxy=args.http_proxy,
        ca_file=args.ca_file,
        public_url=args.public_url,
        session_idle_seconds=args.session_idle_seconds,
        compress=args.compress,
    )
    print(f"Demo PMS on http://{args.host}:{args.port}/ — staff accounts:")
    for name, password, role in DEMO_USERS:
        print(f"  {name:<8} {password:<16} {role}")
    web.run_app(create_app(settings), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
