"""Operator alerts: e-mail and a signed webhook, deduplicated, rate-limited, off the
request path. `Alerter` is the one entry point; the senders and the throttle are its parts."""
