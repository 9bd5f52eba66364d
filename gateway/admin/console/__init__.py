"""The operator console on the admin listener: server-rendered screens over the gateway's
own query code (login history, known IPs, sessions, users, audit trail, support access,
outbound notifications, policy), for operators who signed in with password and TOTP.

`app.console_routes` mounts it; `auth` is who may do what; one module per screen.
"""
