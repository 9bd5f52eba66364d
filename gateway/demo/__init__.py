"""A small legacy-style PMS: the upstream that the gateway is demoed and tested against."""

from gateway.demo.app import DEMO_USERS, DemoSettings, create_app

__all__ = ["DEMO_USERS", "DemoSettings", "create_app"]
