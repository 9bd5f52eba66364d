"""The policy schema: what the gateway does, as an operator writes it in policies/*.yaml.

One typed section per concern, each field with its default, title and description, so the
JSON Schema (`pms-gateway policy schema`), validation errors and README's option reference
all come from here. Defaults match the bundled demo PMS.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag, field_validator, model_validator

from gateway.policy.areas import ApiClient, ApiClientName, CompiledAreas, PublicArea
from gateway.policy.durations import DurationIn
from gateway.policy.rate_limits import DEFAULT_RATE_LIMITS, RateLimitRule
from gateway.policy.types import Cidr, Member, NetworkRef, Regex, Section, network_ref_problem
from gateway.readers.content_type import codec_name
from gateway.readers.redirects import is_local_target
from gateway.redact.policy import NotificationsPolicy

# A charset label, stored as Python's codec name (windows-1252 -> cp1252) so comparisons are exact.
Charset = Annotated[str, AfterValidator(codec_name)]


class UpstreamPolicy(Section):
    case_insensitive_paths: bool = Field(
        False,
        description="The PMS treats /Admin and /admin alike (IIS and most Windows PMSs do): "
        "paths are lower-cased before matching and forwarding so rules cannot be bypassed by case.",
    )
    allow_non_ascii_paths: bool = Field(
        False,
        description="Forward paths with non-ASCII characters (e.g. `/guests/Müller`); refused with 400 by default, "
        "since a PMS may read `/reservations/１002` (fullwidth 1) as 1002. Allowed ones must be NFKC: fullwidth "
        "digits, ligatures and decomposed accents are always refused.",
    )
    normalise_numbers: bool = Field(
        False,
        description="Strip leading zeros of all-digit path segments before matching and forwarding "
        "(`/reservations/01002` becomes `/reservations/1002`), for a PMS that reads numbers with `int()`; "
        "leave off where `007` and `7` are different things.",
    )
    rewrite_body_urls: bool = Field(
        False,
        description="Rewrite the upstream's own absolute URLs inside HTML, JS and CSS bodies to "
        "the public URL (for a PMS that ignores X-Forwarded-Host).",
    )
    host_header: Literal["preserve", "upstream"] = Field(
        "preserve",
        description="`preserve` sends the browser's Host to the PMS (most apps check Origin "
        "against it); `upstream` sends the upstream's own host and rewrites Origin and Referer to match.",
    )


class LoginSuccessRule(Section):
    status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        [302, 303], description="Upstream status codes that can mean success."
    )
    redirect_not_to: Regex | None = Field(
        "^/login",
        description="Success only if the redirect's path does NOT match this (e.g. back to the form).",
    )
    redirect_to: Regex | None = Field(None, description="Success only if the redirect's path matches this.")
    cookie_set: str | None = Field(None, description="Success only if the upstream sets this cookie.")
    failure_text: str | None = Field(
        None, description="Text in the upstream's body that means the password was refused."
    )


class UsernamePolicy(Section):
    trim: bool = Field(True, description="Strip surrounding white space.")
    casefold: bool = Field(True, description="`ALICE` and `alice` are one user.")
    unknown: Literal["default_group", "refuse"] = Field(
        "default_group",
        description="A username no group lists: give it `default_group`, or refuse the login.",
    )


class LoginIdentity(Section):
    """Where the PMS itself says who is signed in: the gateway reads it after every login
    and whenever the vaulted cookies of a session change, and ends a session whose PMS
    user is not the session's user (a second login form, "switch user", a JSON login)."""

    path: str | None = Field(
        None, description="A PMS page that shows the signed-in user (e.g. `/reservations`); unset = no identity check."
    )
    pattern: Regex | None = Field(
        None,
        description="Regular expression with one group that reads the signed-in user from that page "
        "(demo PMS: `Logged in as <b>([^<]+)</b>`).",
    )
    status: list[int] = Field([200], description="Status codes of that page when someone is signed in.")

    @model_validator(mode="after")
    def _complete(self) -> LoginIdentity:
        if (self.path is None) != (self.pattern is None):
            raise ValueError("write both `path` and `pattern` (or neither)")
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"path {self.path!r} must start with /")
        if self.pattern is not None and re.compile(self.pattern).groups != 1:
            raise ValueError("pattern needs exactly one group: (...) around the user name")
        return self

    @property
    def configured(self) -> bool:
        return self.path is not None


class PasswordForm(Section):
    """Another form of the PMS that takes a password (`login.password_forms`). None of them
    may change who is signed in: see `gateway.auth.password_forms`."""

    kind: Literal["reauth", "change", "reset"] = Field(
        description="`reauth`: the password asked again before a dangerous action; `change`: the user's own "
        "password change; both only inside a live gateway session. `reset`: the form an e-mailed reset link "
        "opens, without a session (its answer never signs anyone in).",
    )
    path: Regex = Field(description="Regular expression searched in the canonical path (anchor it: `^/account/password$`).")
    method: Annotated[str, AfterValidator(str.upper)] = Field("POST", description="HTTP method of the form's submission.")
    format: Literal["form", "json"] = Field("form", description="Body format of the submission.")
    password_field: str | None = Field(
        "password", description="The current password's field (`reauth`, `change`); `null` for `reset`."
    )
    username_field: str | None = Field(
        None,
        description="A username field of the form, if it has one: inside a session it must name the session's "
        "own user; on a `reset` form it names whose sessions end.",
    )
    new_password_fields: list[str] = Field([], description="The new password's fields (`change`, `reset`).")
    success: LoginSuccessRule | None = Field(
        None, description="How the PMS answers a right password on this form; unset = `login.success`."
    )
    step_up: bool = Field(
        False,
        description="`reauth` only: ask the gateway's own second factor again before the form goes to the PMS "
        "(a password typed at an unattended desk proves little).",
    )
    request_path: Regex | None = Field(
        None,
        description="`reset` only: the form that asks for a reset link (e.g. `^/password/forgot$`): "
        "rate-limited (`rate_limits` with `password_reset: true`) and captcha'd like the login.",
    )
    request_method: Annotated[str, AfterValidator(str.upper)] = Field("POST", description="Method of that request form.")

    @model_validator(mode="after")
    def _fits_kind(self) -> PasswordForm:
        if self.kind in ("reauth", "change") and not self.password_field:
            raise ValueError(f"a `{self.kind}` form needs `password_field` (the current password)")
        if self.kind == "reset" and self.password_field:
            raise ValueError("a `reset` form has no current password: write `password_field: null`")
        if self.kind in ("change", "reset") and not self.new_password_fields:
            raise ValueError(f"a `{self.kind}` form needs `new_password_fields`")
        if self.step_up and self.kind != "reauth":
            raise ValueError("`step_up` is for `reauth` forms")
        if self.request_path is not None and self.kind != "reset":
            raise ValueError("`request_path` is for `reset` forms")
        names = [n for n in (self.password_field, self.username_field, *self.new_password_fields) if n]
        if len(set(names)) != len(names):
            raise ValueError("each field of a password form is named once")
        return self

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(self.path)

    @cached_property
    def request_pattern(self) -> re.Pattern[str] | None:
        return re.compile(self.request_path) if self.request_path is not None else None


class LoginRule(Section):
    path: str = Field("/login", description="The PMS's login form target (canonical path).")
    page: str | None = Field(
        None,
        description="The sign-in page a signed-out browser is sent to, when that is not `path` (a single-page app "
        "whose `path` is its JSON login endpoint: e.g. `/app/` or `/app/#/login`); reachable without a session. "
        "Unset = `path`.",
    )
    method: str = Field("POST", description="HTTP method of the login request.")
    format: Literal["form", "json"] = Field("form", description="Body format of the login request.")
    username_field: str = Field("username", description="Name of the username field.")
    password_field: str = Field("password", description="Name of the password field.")
    charset: Charset = Field(
        "utf-8",
        description="Charset the PMS reads its login form in (browsers send none): e.g. windows-1252 for a "
        "legacy PMS. A login declaring another charset is refused; UTF-7 and other non-ASCII-compatible ones are rejected.",
    )
    usernames: UsernamePolicy = UsernamePolicy()
    success: LoginSuccessRule = LoginSuccessRule()
    upstream_session_cookies: list[str] = Field(
        ["PMSSESSID"], description="The PMS's session cookies: kept by the gateway, never sent to browsers."
    )
    vault_all_cookies_except: list[str] | None = Field(
        None,
        description="Vault every upstream cookie except these (e.g. a CSRF cookie the PMS's JS reads).",
    )
    logout_paths: list[str] = Field(["/logout"], description="The PMS's logout paths.")
    next_parameters: list[str] = Field(
        ["next", "return_to", "returnUrl", "redirect"],
        description="Redirect-target parameters of the login request; off-site values are refused (open redirect).",
    )
    public_paths: list[Regex] = Field(
        ["^/login$", "^/static/"],
        description="Reachable without a gateway session: the login page and the assets it needs.",
    )
    identity: LoginIdentity = Field(
        LoginIdentity(),
        description="Check who the PMS says is signed in; without it, vaulted cookies set outside the login are dropped.",
    )
    password_forms: list[PasswordForm] = Field(
        [],
        description="The PMS's other password forms (re-authentication, password change, reset link); "
        "a password anywhere else is refused with 400.",
    )

    @field_validator("page")
    @classmethod
    def _page_is_local(cls, page: str | None) -> str | None:
        if page is not None:
            path = page.partition("#")[0]
            if not is_local_target(path) or "?" in path or path.startswith("/_gateway/"):
                raise ValueError(
                    f"{page!r} must be a path of the PMS starting with one / (a #fragment may follow), "
                    "without a query and outside /_gateway/"
                )
        return page

    @property
    def page_path(self) -> str:
        """The canonical path of the sign-in page (`page` without its #fragment, else `path`)."""
        return (self.page or self.path).partition("#")[0]

    def page_url(self, query: str = "") -> str:
        """Where a browser is sent to sign in: the sign-in page, `query` (`next=...`) placed
        before its #fragment, if any. Every redirect to sign in is built here."""
        path, mark, fragment = (self.page or self.path).partition("#")
        return path + (f"?{query}" if query else "") + mark + fragment

    @model_validator(mode="after")
    def _password_forms_apart(self) -> LoginRule:
        for index, form in enumerate(self.password_forms):
            if form.method == self.method and form.pattern.search(self.path):
                raise ValueError(
                    f"password_forms.{index}.path {form.path!r} matches the login path {self.path!r}: "
                    "a password form must never be read as, or instead of, the login"
                )
            if form.request_pattern is not None and form.request_method == self.method and form.request_pattern.search(self.path):
                raise ValueError(f"password_forms.{index}.request_path {form.request_path!r} matches the login path")
        return self

    def is_login_request(self, path: str, method: str) -> bool:
        """Whether a request (canonical path) submits the login form itself."""
        return path == self.path and method == self.method

    def password_form_for(self, path: str, method: str) -> PasswordForm | None:
        """The password form a request submits, if any (the first whose path and method match)."""
        for form in self.password_forms:
            if form.method == method and form.pattern.search(path):
                return form
        return None

    def is_reset_request(self, path: str, method: str) -> bool:
        """Whether a request submits a reset form's request form (asks for a reset link)."""
        return any(
            form.request_pattern is not None and form.request_method == method and form.request_pattern.search(path)
            for form in self.password_forms
        )


class SessionPolicy(Section):
    """Session rules; `idle_ignore_patterns` is the compiled form of idle_ignore_paths."""

    idle_timeout: DurationIn("10s", "7d") = Field(25 * 60, description="Sign out after this long without activity.")
    idle_ignore_paths: list[Regex] = Field(
        [], description="Requests that do not count as activity (auto-refresh polling)."
    )
    max_lifetime: DurationIn("10s", "90d") = Field(12 * 3600, description="Absolute lifetime of a session.")
    max_devices: int = Field(1, ge=1, le=100, description="Devices a user may be signed in on at once.")
    on_new_device: Literal["replace", "refuse"] = Field(
        "replace", description="When a login would exceed max_devices: end the oldest, or refuse."
    )
    remember_device: Literal[False] | DurationIn("10s", "400d") = Field(
        False, description="Skip 2FA on a remembered browser for this long; false = never. Read at every use: "
        "turning it off or shortening it ends remembered browsers."
    )
    bind_to_ip: bool = Field(
        False,
        description="End a session used from another client IP than it logged in from (stolen cookie); "
        "leave off where staff move between networks.",
    )
    cacheable_paths: list[Regex] = Field(
        [],
        description="Paths whose answers browsers may cache during a session (static assets); "
        "every other page of a session is sent `Cache-Control: no-store`.",
    )

    @cached_property
    def idle_ignore_patterns(self) -> list[re.Pattern[str]]:
        return [re.compile(p) for p in self.idle_ignore_paths]

    def ignores_activity(self, path: str) -> bool:
        """Whether a request for `path` is polling that does not keep a session alive."""
        return any(p.search(path) for p in self.idle_ignore_patterns)

    @cached_property
    def _cacheable(self) -> re.Pattern[str] | None:
        return re.compile("|".join(f"(?:{p})" for p in self.cacheable_paths)) if self.cacheable_paths else None

    def is_cacheable(self, path: str) -> bool:
        """Whether a session's answer for `path` may stay in the browser's cache."""
        return self._cacheable is not None and self._cacheable.search(path) is not None


class SessionOverrides(Section):
    """Per-group changes to `sessions`; unset keys inherit the policy-wide value."""

    idle_timeout: DurationIn("10s", "7d") | None = None
    idle_ignore_paths: list[Regex] | None = None
    max_lifetime: DurationIn("10s", "90d") | None = None
    max_devices: int | None = Field(None, ge=1, le=100)
    on_new_device: Literal["replace", "refuse"] | None = None
    remember_device: Literal[False] | DurationIn("10s", "400d") | None = None
    bind_to_ip: bool | None = None


class SecondFactorPolicy(Section):
    required: bool = Field(True, description="Every login needs a second factor.")
    methods: list[Literal["totp", "security_key"]] = Field(
        ["totp", "security_key"], description="Allowed factors (never SMS)."
    )
    enrollment: Literal["invite", "trusted_networks", "open"] = Field(
        "invite", description="How a user without a factor may enroll one."
    )
    enrollment_networks: list[NetworkRef] = Field(
        [], description="For `trusted_networks`: network names or CIDRs enrollment is allowed from."
    )
    invite_valid_for: DurationIn("10s", "90d") = Field(72 * 3600, description="Lifetime of an enrollment invite code.")
    max_attempts: int = Field(5, ge=1, le=100, description="Wrong codes that end a pending login.")
    pending_login_timeout: DurationIn("30s", "1h") = Field(300, description="Time to enter the code after the password.")


class LockoutRule(Section):
    failures: int = Field(5, ge=1, le=100_000)
    within: DurationIn("1s", "30d") = 15 * 60
    lock_for: DurationIn("1s", "30d") = 15 * 60


class LockoutPolicy(Section):
    per_user: LockoutRule = LockoutRule()
    per_ip: LockoutRule = LockoutRule(failures=20, within=15 * 60, lock_for=3600)
    inside_known_networks: Literal["delay", "lock"] = Field(
        "delay",
        description="Inside `captcha.known_networks` (the hotel's own networks): `delay` never locks but makes "
        "each failure past a rule's limit wait twice as long (1 s, 2 s, ... up to `delay_max`; 429 with "
        "Retry-After); the lock still applies outside. `lock`: locked there too.",
    )
    delay_max: DurationIn("1s", "1h") = Field(60, description="Longest wait for `inside_known_networks: delay`.")


class CaptchaPolicy(Section):
    when: list[
        Literal["always", "anonymous_vpn", "tor", "hosting_provider", "public_proxy", "unknown_network", "after_failures"]
    ] = Field(
        ["anonymous_vpn", "tor", "hosting_provider", "public_proxy", "after_failures"],
        description="When a login needs a captcha before the password goes to the PMS; empty = never. "
        "VPN, Tor, hosting and proxy flags come from the GeoIP Anonymous-IP file if any, the network list "
        "(`risk.networks`) on the GeoLite2-ASN owner or RDAP answer, and the Tor exit list (`pms-gateway risk tor-list`).",
    )
    after_failures: int = Field(
        3, ge=1, le=100_000, description="For `after_failures`: failed attempts (lockout window) before it: per user or "
        "per address outside `known_networks`; inside them per user and per (user, address) pair, never per address."
    )
    known_networks: list[NetworkRef] = Field(
        [],
        description="For `unknown_network`: network names or CIDRs that are known; empty = every network under `networks:`.",
    )
    difficulty: int = Field(
        100_000, ge=1, le=10_000_000,
        description="Proof of work: the browser tries up to this many SHA-256 hashes (100000 is about a second).",
    )
    challenge_valid_for: DurationIn("30s", "1h") = Field(300, description="Time to solve a captcha; each challenge works once.")
    pass_valid_for: DurationIn("30s", "1d") = Field(
        600, description="A solved captcha lets this browser, from the same IP, try to sign in for this long ..."
    )
    pass_uses: int = Field(1, ge=1, le=10_000, description="... and for this many login attempts (1 = a new captcha per attempt).")
    on_unknown: Literal["allow", "captcha"] = Field(
        "allow",
        description="A public address outside `known_networks` that nothing is known about (no GeoIP ASN record, no "
        "network-list or Tor-list entry, no RDAP answer yet): `allow` lets the login through, `captcha` asks first.",
    )


class NetworkOwnerRule(Section):
    """One entry of the hosting/VPN network list (`gateway/risk/data/networks.yaml` or `risk.networks`)."""

    asn: int | None = Field(None, ge=1, le=4_294_967_295)
    name: Regex | None = None  # searched, case-insensitive, in the owner's name (GeoIP ASN org or RDAP)
    kind: Literal["hosting", "vpn", "proxy"] = "hosting"
    owner: str | None = None  # for people reading the list

    @model_validator(mode="after")
    def _one_key(self) -> NetworkOwnerRule:
        if (self.asn is None) == (self.name is None):
            raise ValueError("a network rule has exactly one of `asn: NUMBER` or `name: REGEX`")
        return self


class RiskPolicy(Section):
    networks: list[NetworkOwnerRule] = Field(
        [],
        description="Hosting, cloud, VPN and proxy networks added to the shipped list (gateway/risk/data/networks.yaml): "
        "`{asn: 64500, kind: hosting}` or `{name: 'example hosting', kind: vpn}`.",
    )
    rdap: bool = Field(
        True,
        description="Look up the owner of a new login address by RDAP in the background (never on the login's path); "
        "`false` tells the registries nothing about which addresses staff use.",
    )
    rdap_url: str = Field(
        "https://rdap.org", description="RDAP service asked for `<url>/ip/<address>` (rdap.org redirects to the registry)."
    )
    rdap_timeout: DurationIn("1s", "1m") = Field(10, description="Longest wait for one RDAP answer (in the background).")
    rdap_concurrency: int = Field(4, ge=1, le=64, description="RDAP lookups running at once; more wait their turn.")


class AccessRule(Section):
    allow: Regex | None = None
    deny: Regex | None = None
    methods: list[str] | None = None

    @model_validator(mode="after")
    def _one_action(self) -> AccessRule:
        if (self.allow is None) == (self.deny is None):
            raise ValueError("an access rule has exactly one of `allow: REGEX` or `deny: REGEX`")
        return self


class AccessPolicy(Section):
    rules: list[AccessRule] = Field([], description="First match wins; no match = allow.")
    hide_links: bool = Field(
        False,
        description="Hide the group's links and forms to denied paths in the PMS's pages (a same-origin "
        "stylesheet built from `^/prefix` deny rules); cosmetic, the 403 is the protection.",
    )


def _access_form(value: object) -> str:
    return "list[rules]" if isinstance(value, list) else "[rules, hide_links]"


# `access:` is either the rules alone (a list) or `{rules: [...], hide_links: true}`; the
# tags contain "[" so validation errors name `access.0.allow`, as the operator wrote it.
AccessField = Annotated[
    Annotated[list[AccessRule], Tag("list[rules]")] | Annotated[AccessPolicy, Tag("[rules, hide_links]")],
    Discriminator(_access_form),
    AfterValidator(lambda value: value if isinstance(value, AccessPolicy) else AccessPolicy(rules=value)),
]


_MOVED = ("Removed: operator permissions belong to console operator accounts "
          "(`pms-gateway operators add NAME --permissions ...`).")


def _moved_to_operators(value: object) -> None:
    """The permissions that lived in the policy moved to operator accounts: one model, not
    two. A policy still naming them is refused with the command that replaces them."""
    if value is not None:
        raise ValueError(
            "operator permissions moved to console operator accounts: remove this key and run "
            "`pms-gateway operators add NAME --permissions view,manage_sessions,manage_users,"
            "forget_known_ip,support_access,console_admin` (the permissions that NAME needs)"
        )


MovedToOperators = Annotated[None, BeforeValidator(_moved_to_operators)]


def _time_zone(value: object) -> object:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if isinstance(value, str):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Prague") from None
    return value


class GroupPolicy(Section):
    members: list[Member] = Field([], description='Usernames, or patterns written "re:^frontdesk-".')
    networks: list[NetworkRef] = Field([], description="Network names or CIDRs this group may use; empty = anywhere.")
    sessions: SessionOverrides = SessionOverrides()
    access: AccessField = Field(  # type: ignore[assignment]
        AccessPolicy(), description="Access rules (`[rules]` or `{rules: [...], hide_links: true}`)."
    )
    permissions: MovedToOperators = Field(None, description=_MOVED)
    enrollment: Literal["invite", "trusted_networks", "open"] | None = None


class AuditPolicy(Section):
    identifiers: dict[str, Regex] = Field(
        {"reservation": r"^/reservations/(\d+)"},
        description="Path patterns whose first capture is recorded as a business identifier.",
    )
    query_values: Literal["keep", "drop"] = Field("drop", description="Keep query values in the audit trail.")
    path_secrets: list[Regex] = Field(
        [],
        description="Path patterns whose capture groups are secrets (reset tokens, guest order links): "
        "recorded as a digest (`~` and 16 hex digits), never in clear.",
    )
    query_secrets: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        [],
        description="Query parameters of e-mailed links whose values are secrets (`token` of `/reset?token=...`): "
        "with `query_values: keep` recorded, and shown in logs, as the same digest as path_secrets.",
    )
    retention: DurationIn("1d", "3650d") = Field(400 * 86400, description="Audit records older than this are purged.")
    on_store_failure: Literal["spool", "refuse"] = Field(
        "spool",
        description="Database unreachable: `spool` keeps serving and writes records to a local file "
        "replayed later; `refuse` answers 503 until the database is back.",
    )
    on_queue_full: Literal["wait", "refuse"] = Field(
        "wait", description="Record queue full: requests `wait` for space, or get 503 (`refuse`)."
    )
    durability: Literal["normal", "strict"] = Field(
        "normal",
        description="`normal`: a crash loses at most the last flush_interval of records; `strict`: "
        "a response completes only once its record is stored (group commit).",
    )
    flush_interval: DurationIn("0.01s", "1h") = Field(0.25, description="Records are written at least this often (small batches keep the latency tail short).")
    batch_size: int = Field(250, ge=1, le=10000, description="Records written per database transaction.")
    queue_size: int = Field(20000, ge=10, le=10_000_000, description="Records waiting to be written before on_queue_full applies.")
    head_export_interval: DurationIn("1s", "1d") = Field(
        60, description="How often the latest chain head is exported outside the database (heads.jsonl, log, webhook)."
    )


class KnownIpsPolicy(Section):
    keep_for: DurationIn("1d", "3650d") = Field(100 * 86400, description="Forget a known IP this long after its last use.")
    ipv6_prefix: int = Field(64, ge=32, le=128, description="IPv6 addresses are grouped by this prefix.")
    forget_permission: MovedToOperators = Field(None, description=_MOVED)


class SupportAccessPolicy(Section):
    accounts: list[str] = Field(
        ["support"],
        description="PMS usernames reserved for the vendor's support staff: they sign in only with a "
        "temporary access code from `pms-gateway support grant`, instead of a second factor.",
    )
    max_duration: DurationIn("5m", "30d") = Field(
        8 * 3600, description="Longest validity of an access code; the support session ends with it."
    )
    permission: MovedToOperators = Field(None, description=_MOVED)


class AlertsPolicy(Section):
    email_to: list[str] = Field([], description="Operator addresses that receive alerts.")
    on: list[
        Literal["new_ip_login", "lockout", "every_login", "blocked_notification", "support_access", "identity_mismatch",
                "mail_held", "mail_delayed", "mail_failed"]
    ] = Field(
        ["new_ip_login", "lockout", "blocked_notification", "support_access", "identity_mismatch", "mail_held",
         "mail_delayed", "mail_failed"],
        description="Events that alert: a login from an address new for that user, a lockout, every "
        "login, an outbound notification blocked by redaction, a vendor support grant, revocation or login, "
        "the PMS showing another user than the session's (`login.identity`), a mail the SMTP relay could "
        "not read whole and holds for review (`mail_held`), a queued mail still undelivered after "
        "smtp_relay.delay_warning (`mail_delayed`) or failed for good (`mail_failed`, the sender gets a bounce).",
    )
    min_interval: DurationIn("0s", "7d") = Field(
        600, description="Identical alerts are sent at most once per interval; `every_login` alerts are never deduplicated."
    )
    max_per_hour: int = Field(30, ge=1, le=10_000, description="At most this many alerts an hour in all; the rest are "
                              "listed in the next alert that goes out, or in a summary once the cap has room.")
    new_ip_on_first_login: bool = Field(
        False, description="Also alert on a user's very first login (no successful login in the history yet)."
    )


class CsrfPolicy(Section):
    check_origin: bool = Field(
        True, description="State-changing requests and WebSocket handshakes must come from the gateway's origin."
    )
    exempt_paths: list[Regex] = Field([], description="Paths exempt from the Origin/Referer check.")


class PagesPolicy(Section):
    account_link: bool = Field(
        False,
        description="Add a small, dismissable \"My account\" link to /_gateway/account to the PMS's HTML pages "
        "of signed-in staff (a same-origin stylesheet and element: a strict PMS CSP allows it).",
    )


class Policy(Section):
    extends: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = Field(
        [],
        description="Policy files this file builds on, relative to it (`extends: default.yaml`): they load first "
        "and this file's keys override theirs. A file that extends another is a policy of its own: a folder "
        "in `policy_paths` loads it only when it is named.",
    )
    property: str = Field("Hotel Demo", description="The property's name, shown on every gateway page.")
    property_timezone: Annotated[str, AfterValidator(_time_zone)] = Field(
        "UTC", description="The property's IANA time zone (e.g. Europe/Prague): times on the operator console, "
        "on the \"signed in elsewhere\" page and on the lockout page."
    )
    upstream: UpstreamPolicy = UpstreamPolicy()
    login: LoginRule = LoginRule()
    networks: dict[str, list[Cidr]] = Field({}, description="Named lists of networks, reused below.")
    sessions: SessionPolicy = SessionPolicy()
    second_factor: SecondFactorPolicy = SecondFactorPolicy()
    captcha: CaptchaPolicy = CaptchaPolicy()
    lockout: LockoutPolicy = LockoutPolicy()
    risk: RiskPolicy = RiskPolicy()
    csrf: CsrfPolicy = CsrfPolicy()
    pages: PagesPolicy = PagesPolicy()
    groups: dict[str, GroupPolicy] = Field({}, description="Staff groups and their rules.")
    default_group: str | None = Field(None, description="Group of users no group lists.")
    audit: AuditPolicy = AuditPolicy()
    known_ips: KnownIpsPolicy = KnownIpsPolicy()
    support: SupportAccessPolicy = SupportAccessPolicy()
    alerts: AlertsPolicy = AlertsPolicy()
    rate_limits: list[RateLimitRule] = Field(
        default_factory=lambda: list(DEFAULT_RATE_LIMITS),
        description="Request rate limits, each counted on its own (429 with Retry-After past one); "
        "setting the list replaces these defaults.",
    )
    public_areas: dict[str, PublicArea] = Field(
        {},
        description="Named guest areas on the PMS's host (booking engine, guest portal, e-mailed order links): "
        "no session needed, never a staff session's cookies, audited under the name.",
    )
    api_clients: dict[ApiClientName, ApiClient] = Field(
        {},
        description="Integrations calling the PMS's API without a person: a token or header, paths, methods, "
        "source networks, a rate limit; audited as `api:<name>`.",
    )
    notifications: NotificationsPolicy = Field(
        default_factory=NotificationsPolicy, description="Redaction of guest data in outbound notifications."
    )

    @model_validator(mode="after")
    def _references_exist(self) -> Policy:
        known = set(self.networks)
        for name, group in self.groups.items():
            for net in group.networks:
                _check_network_ref(net, known, f"groups.{name}.networks")
        for net in self.second_factor.enrollment_networks:
            _check_network_ref(net, known, "second_factor.enrollment_networks")
        for net in self.captcha.known_networks:
            _check_network_ref(net, known, "captcha.known_networks")
        for name, client in self.api_clients.items():
            for net in client.networks:
                _check_network_ref(net, known, f"api_clients.{name}.networks")
        if self.default_group is not None and self.default_group not in self.groups:
            raise ValueError(
                f"default_group {self.default_group!r} is not a group; define it under `groups:`"
            )
        self._merge_group_sessions()  # every group's effective rules checked now (not cached:
        return self                   # model_copy would carry a cache past its overrides)

    def expand_networks(self, names: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        result = []
        for name in names:
            cidrs = self.networks.get(name, [name])
            result.extend(ipaddress.ip_network(c, strict=False) for c in cidrs)
        return result

    @cached_property
    def _public_paths(self) -> re.Pattern[str]:
        # One alternation: a single C-level search per request instead of one per pattern.
        resets = [p for f in self.login.password_forms if f.kind == "reset" for p in (f.path, f.request_path) if p]
        pages = {self.login.path, self.login.page_path}  # the login form's target and its sign-in page
        patterns = [*("^" + re.escape(p) + "$" for p in sorted(pages)), *self.login.public_paths, *resets]
        return re.compile("|".join(f"(?:{p})" for p in patterns))

    @cached_property
    def areas(self) -> CompiledAreas:
        """`public_areas` and `api_clients`, compiled for matching requests."""
        return CompiledAreas(self.public_areas, self.api_clients, self.expand_networks)

    def is_public_path(self, path: str) -> bool:
        """Reachable without a session: the login form's own path and sign-in page, the listed
        paths and the reset forms of `login.password_forms` (with their request forms)."""
        return self._public_paths.search(path) is not None

    @cached_property
    def _group_sessions(self) -> dict[str | None, SessionPolicy]:
        return self._merge_group_sessions()

    def _merge_group_sessions(self) -> dict[str | None, SessionPolicy]:
        """Each group's effective session rules, merged as typed values (never from text:
        a duration dumped to `"1m"` and copied back would be a string where a float is
        compared) and validated again as a whole, so `policy check` fails where a group's
        combination would."""
        merged: dict[str | None, SessionPolicy] = {None: self.sessions}
        for name, group in self.groups.items():
            changes = {
                key: getattr(group.sessions, key)
                for key in group.sessions.model_fields_set
                if getattr(group.sessions, key) is not None
            }
            if not changes:
                merged[name] = self.sessions
                continue
            values = {key: getattr(self.sessions, key) for key in SessionPolicy.model_fields} | changes
            merged[name] = SessionPolicy.model_validate(values)
        return merged

    @cached_property
    def _group_networks(self) -> dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
        return {name: self.expand_networks(group.networks) for name, group in self.groups.items()}

    def network_allows(self, group: str | None, ip: str) -> bool:
        """Whether `group` may log in and work from `ip` (no networks listed = anywhere)."""
        networks = self._group_networks.get(group or "", [])
        if not networks:
            return True
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in networks)

    def sessions_for(self, group: str | None) -> SessionPolicy:
        """The session rules of `group`: its overrides on top of the policy-wide ones."""
        return self._group_sessions.get(group, self.sessions)

    def enrollment_for(self, group: str | None) -> str:
        chosen = self.groups[group].enrollment if group in self.groups else None
        return chosen or self.second_factor.enrollment


def _check_network_ref(ref: str, known: set[str], where: str) -> None:
    """For policies built in code; the loader checks each item at its own line (NetworkRef)."""
    if problem := network_ref_problem(ref, known):
        raise ValueError(f"{where}: {problem}")
