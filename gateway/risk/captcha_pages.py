"""The captcha page, `/_gateway/captcha`: solve, get a pass, go back to the login page.

GET shows a proof-of-work challenge that `static/captcha.js` solves in the browser (no
typing, a second or two), or with `mode=image` a picture of characters to type, for
browsers without JavaScript (the page's `<noscript>` and "use a picture" links lead
there). POST checks the answer; a right one sets the pass cookie and redirects (303) to
`next`, which must be a path on this site, or, when the browser's login was held
(`gateway.risk.held_login`), 307 to the login URL, where the held login is replayed. A JSON client may GET the challenge as JSON and
POST `{"altcha": payload}`.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import structlog
from aiohttp import web

from gateway.access.origin_check import same_origin
from gateway.pages.render import choose_language, form_or_json, render_page, see_other, translator, wants_json
from gateway.policy.schema import Policy
from gateway.proxy.exchange import CLIENT, Addon
from gateway.risk.captcha import CAPTCHA_PATH, PASS_COOKIE, CaptchaGate, local_next
from gateway.risk.networks import client_key
from gateway.sessions.cookies import HELD_LOGIN_COOKIE, cookie_value, set_cookie

log = structlog.get_logger("gateway.captcha")


class CaptchaPages(Addon):
    def __init__(self, gate: CaptchaGate) -> None:
        self.gate = gate
        self.policy = gate.policy
        self.challenges = gate.challenges
        self.passes = gate.passes

    def routes(self) -> list[web.RouteDef]:
        return [web.get(CAPTCHA_PATH, self.show), web.post(CAPTCHA_PATH, self.submit)]

    async def show(self, request: web.Request) -> web.StreamResponse:
        policy = self.policy()
        target = local_next(request.query.get("next"), policy)
        mode = "image" if request.query.get("mode") == "image" else "pow"
        return await self._challenge(request, policy, target, mode)

    async def submit(self, request: web.Request) -> web.StreamResponse:
        policy = self.policy()
        client = request[CLIENT]
        form = await form_or_json(request)
        # A JSON body cannot be sent cross-site without a CORS preflight, which is never granted.
        if request.content_type != "application/json" and not same_origin(request, client.origin):
            return _message(request, policy, 403, "forbidden_text")
        target = local_next(form.get("next"), policy)
        if form.get("image_id"):
            mode = "image"
            solved = await self.challenges.check_image(form["image_id"], form.get("answer", ""))
        else:
            mode = "pow"
            solved = await self.challenges.check_proof_of_work(form.get("altcha", ""))
        if not solved:
            log.info("captcha not solved", ip=client.ip, mode=mode)
            if wants_json(request) or request.content_type == "application/json":
                return web.json_response({"error": "captcha_invalid"}, status=400)
            return await self._challenge(request, policy, target, mode, status=400, error="captcha_invalid")
        valid_for = policy.captcha.pass_valid_for
        token = self.passes.issue(client.ip, valid_for)
        log.info("captcha solved", ip=client.ip, mode=mode)
        if wants_json(request) or request.content_type == "application/json":
            response: web.StreamResponse = web.json_response({"status": "ok", "next": target})
        elif held := await self.gate.held.peek(
            cookie_value(request.headers.get("Cookie"), HELD_LOGIN_COOKIE), client_key(client.ip, policy)
        ):
            # 307 repeats this POST at the login URL; the gate swaps in the held login there
            # and runs every check on it again (gateway.risk.held_login).
            location = policy.login.path + (f"?{held.query}" if held.query else "")
            response = web.Response(status=307, headers={"Location": location})
        else:
            response = see_other(target)
        response.headers.add(
            "Set-Cookie",
            set_cookie(PASS_COOKIE, token, secure=client.scheme == "https", max_age=int(valid_for), same_site="Strict"),
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def _challenge(
        self, request: web.Request, policy: Policy, target: str, mode: str, *, status: int = 200, error: str | None = None
    ) -> web.StreamResponse:
        if not await self.challenges.may_issue(client_key(request[CLIENT].ip, policy)):
            return _message(request, policy, 429, "captcha_too_many")
        rules = policy.captcha
        if wants_json(request):
            challenge = await self.challenges.proof_of_work(rules.difficulty, rules.challenge_valid_for)
            body = {"altcha": challenge, "submit": CAPTCHA_PATH, "next": target}
            return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})
        quoted = quote(target, safe="")
        context = dict(
            mode=mode,
            next=target,
            error=error,
            image_url=f"{CAPTCHA_PATH}?mode=image&next={quoted}",
            pow_url=f"{CAPTCHA_PATH}?next={quoted}",
        )
        if mode == "image":
            image_id, png = await self.challenges.image(rules.challenge_valid_for)
            context.update(image_id=image_id, image="data:image/png;base64," + base64.b64encode(png).decode())
        else:
            challenge = await self.challenges.proof_of_work(rules.difficulty, rules.challenge_valid_for)
            context.update(challenge=json.dumps(challenge, separators=(",", ":")))
        return render_page(request, "captcha.html", status=status, property_name=policy.property, **context)


def _message(request: web.BaseRequest, policy: Policy, status: int, key: str) -> web.Response:
    if wants_json(request):
        return web.json_response({"error": key}, status=status)
    t = translator(choose_language(request.headers.get("Accept-Language")))
    return render_page(request, "message.html", status=status, property_name=policy.property, message=t(key),
                       link=policy.login.page_url())
