"""X's post route, `POST /2/tweets`: the bot posts publicly (replies to mentions).

- Body `{"text": str, "reply"?: {"in_reply_to_tweet_id": str}}`; other X fields (media,
  poll, ...) are ignored. Answer **201** `{"data": {"id", "text", "edit_history_tweet_ids":
  [id]}}` with the route's `x-rate-limit-*` headers.
- Auth: the bot's OAuth 1.0a user context, checked as on the DM routes (401 problem for a bad
  signature, 403 "Unsupported Authentication" for an app-only bearer).
- Checks, in X's order: authentication, injected 429 (`post_rate_limit_next`), the budget
  (100 posts per 15 minutes per user, X's documented user limit), the body (400
  `invalid-request` problem: no text, a bad or unknown `reply.in_reply_to_tweet_id`; 403
  "Your Tweet text is too long" problem (`errors.post_too_long`) for text weighing over 280
  as X counts it: twitter-text v3, docs.x.com fundamentals/counting-characters: NFC, most
  CJK characters and every emoji 2, a URL 23), then an injected failure (`post_fail_next`,
  status `post_fail_status`, default 503).
- Like X, the new post comes back to the bot's Account Activity webhooks as a
  `tweet_create_events` delivery (in the background: the caller never waits for it).
- The `latency` fault applies with the key `tweets` (or a path such as `/2/tweets`).
- Not emulated: X's 403 for duplicate content, replies to deleted posts, reply settings.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from catbot.emulator import errors
from catbot.emulator.access import authenticate
from catbot.emulator.api_common import RATE_HEADERS, Refusal, json_object
from catbot.emulator.config import USER_ID_RE
from catbot.emulator.errors import Style
from catbot.emulator.posts import MAX_POST_LENGTH, create_post, dispatch_post, weighted_length
from catbot.emulator.runtime import RUNTIME, Runtime
from catbot.emulator.state.budgets import RateWindow
from catbot.emulator.state.posts import Post
from catbot.emulator.traffic import OUTCOME

log = logging.getLogger("catbot.emulator.tweets")

TWEETS = "/2/tweets"
# X: 100 posts per 15 minutes per user (and more per app); one window for the bot here.
POST_RATE_LIMIT = 100
POST_RATE_WINDOW = 900.0
_WINDOW_KEY = "tweets-user"


def _invalid(message: str, parameter: str | None = None, value: Any = None) -> Refusal:
    body = errors.problem(400, "invalid-request", "Invalid Request", message)
    if parameter is not None:
        body["errors"][0]["parameters"] = {parameter: [str(value)]}
    body["detail"] = "One or more parameters to your request was invalid."
    return Refusal(400, body)


def _parse(runtime: Runtime, data: dict[str, Any]) -> tuple[str, Post | None]:
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _invalid("text: a post needs text (attachments are not emulated)", "text", text)
    if weighted_length(text) > MAX_POST_LENGTH:
        raise Refusal.of(errors.post_too_long(), Style.V2)
    reply = data.get("reply")
    if reply is None:
        return text, None
    if not isinstance(reply, dict):
        raise _invalid("reply must be an object")
    target = reply.get("in_reply_to_tweet_id")
    if isinstance(target, int) and not isinstance(target, bool):
        target = str(target)
    if not isinstance(target, str) or not USER_ID_RE.match(target):
        raise _invalid(
            f"The `reply.in_reply_to_tweet_id` query parameter value [{target}] is not valid",
            "reply.in_reply_to_tweet_id",
            target,
        )
    post = runtime.state.posts.by_id(target)
    if post is None:
        raise _invalid(
            f"The `reply.in_reply_to_tweet_id` query parameter value [{target}] does not exist",
            "reply.in_reply_to_tweet_id",
            target,
        )
    return text, post


def _window(runtime: Runtime) -> RateWindow:
    return runtime.state.budgets.named(_WINDOW_KEY, POST_RATE_LIMIT, POST_RATE_WINDOW)


async def create_tweet(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    state, faults = runtime.state, runtime.state.faults
    state.stats.post_requests += 1
    window = _window(runtime)
    try:
        await authenticate(request, Style.V2, user=True)
    except Refusal:
        request[OUTCOME] = "unauthorized"
        request[RATE_HEADERS] = window.peek(time.time()).headers()
        raise

    if faults.post_rate_limit_next > 0:
        faults.post_rate_limit_next -= 1
        state.stats.post_failed += 1
        request[OUTCOME] = "rate_limited"
        reset = str(int(time.time()) + 1)
        request[RATE_HEADERS] = {
            "x-rate-limit-limit": str(window.limit),
            "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": reset,
        }
        raise Refusal.of(errors.rate_limited(), Style.V2)

    verdict = window.consume(time.time())
    request[RATE_HEADERS] = verdict.headers()
    if not verdict.allowed:
        state.stats.post_failed += 1
        request[OUTCOME] = "rate_limited"
        raise Refusal.of(errors.rate_limited(), Style.V2)

    try:
        text, reply_to = _parse(runtime, await json_object(request, empty_ok=False))
    except Refusal:
        state.stats.post_failed += 1
        request[OUTCOME] = "invalid"
        raise

    if faults.post_fail_next > 0:
        faults.post_fail_next -= 1
        state.stats.post_failed += 1
        request[OUTCOME] = "failed"
        log.info("post answered %d (injected)", faults.post_fail_status)
        raise Refusal.of(errors.injected_failure(faults.post_fail_status), Style.V2)

    post = create_post(state, author_id=state.bot_user_id, text=text, in_reply_to=reply_to)
    state.stats.posts_created += 1
    request[OUTCOME] = "sent"
    log.info("post created id=%s in_reply_to=%s", post.id, post.in_reply_to_tweet_id or "-")
    # Like X, the bot's own post comes back to its webhooks; never make the poster wait.
    runtime.tasks.spawn(dispatch_post(runtime, post), name=f"echo-post-{post.id}")
    return web.json_response(
        {"data": {"id": post.id, "text": post.text, "edit_history_tweet_ids": [post.id]}},
        status=201,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post(TWEETS, create_tweet)
