"""`pms-gateway login discover`: read a PMS's login page and answers, print a `login:` rule.

An operator fitting the gateway to a PMS has to know what the PMS's login form posts and
how its answers tell a refused password from an accepted one. This package finds out by
asking the PMS directly (before the gateway is in place): `page` reads the login page,
`probe` sends one deliberately wrong login (and, if asked, one real one), `rule` writes
what was seen as a commented policy section.
"""
