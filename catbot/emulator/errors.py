"""X's error answers in both flavours' shapes.

v2 routes answer problem objects, v1.1 routes `{"errors":[{"code","message"}]}`; the same
failure may even carry a different status per flavour (a too-long text is 400 in v2, 403 with
code 354 in v1.1). Bodies are always JSON: tweepy parses every error body as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import Any


class Style(Enum):
    V2 = "v2"
    V11 = "v1.1"


@dataclass(frozen=True)
class XError:
    v2_status: int
    v2_body: dict[str, Any]
    v11_status: int
    v11_body: dict[str, Any]

    def render(self, style: Style) -> tuple[int, dict[str, Any]]:
        if style is Style.V2:
            return self.v2_status, self.v2_body
        return self.v11_status, self.v11_body


def _v11(code: int, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _plain_problem(status: int, detail: str | None = None) -> dict[str, Any]:
    title = _phrase(status)
    return {"title": title, "detail": detail or title, "type": "about:blank", "status": status}


def unauthorized() -> XError:
    return XError(401, _plain_problem(401), 401, _v11(32, "Could not authenticate you."))


def timestamp_out_of_bounds() -> XError:
    return XError(401, _plain_problem(401), 401, _v11(135, "Timestamp out of bounds."))


def app_only_forbidden() -> XError:
    return XError(
        403,
        {
            "title": "Unsupported Authentication",
            "detail": (
                "Authenticating with OAuth 2.0 Application-Only is forbidden for this "
                "endpoint.  Supported authentication types are [OAuth 1.0a User Context, "
                "OAuth 2.0 User Context]."
            ),
            "type": "https://api.twitter.com/2/problems/unsupported-authentication",
            "status": 403,
        },
        403,
        _v11(220, "Your credentials do not allow access to this resource."),
    )


def invalid_request(message: str) -> XError:
    return XError(
        400,
        {
            "errors": [{"message": message}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        },
        400,
        _v11(214, message),
    )


def text_too_long(limit: int) -> XError:
    v2 = invalid_request(f"text: size must be between 0 and {limit}")
    return XError(
        v2.v2_status,
        v2.v2_body,
        403,
        _v11(354, "The text of your direct message is over the max character limit."),
    )


def post_too_long() -> XError:
    """`POST /2/tweets` with text over 280 as X counts it.

    Status and shape: the 403 problem docs.x.com x-api/posts/create-post documents for a post
    X refuses for its content (`{"title": "Forbidden", "detail", "type": "about:blank",
    "status": 403}`). docs.x.com shows no example for a too-long text: the detail is the one
    X's answers carry in the field (field reports disagree on 400 or 403: a client must treat
    both as final). v1.1's `statuses/update` said code 186.
    """
    detail = (
        "Your Tweet text is too long. For more information on how Twitter determines text "
        "length see https://github.com/twitter/twitter-text."
    )
    return XError(
        403, _plain_problem(403, detail), 403, _v11(186, "Tweet needs to be a bit shorter.")
    )


# X's messages for the codes that refuse one DM for good (HTTP 403 in both flavours).
_REFUSAL_MESSAGES = {
    349: "You cannot send messages to this user.",
    150: "You cannot send messages to users who are not following you.",
    151: "There was an error sending your message: the recipient cannot receive it.",
    226: (
        "This request looks like it might be automated. To protect our users from spam and "
        "other malicious activity, we can't complete this action right now. Please try "
        "again later."
    ),
}


def cannot_send(code: int = 349) -> XError:
    message = _REFUSAL_MESSAGES.get(code, _REFUSAL_MESSAGES[349])
    return XError(
        403,
        {**_plain_problem(403, message), "errors": [{"code": code, "message": message}]},
        403,
        _v11(code, message),
    )


def rate_limited() -> XError:
    return XError(429, _plain_problem(429), 429, _v11(88, "Rate limit exceeded"))


def injected_failure(status: int) -> XError:
    if status == 503:
        v11 = _v11(130, "Over capacity")
    elif status >= 500:
        v11 = _v11(131, "Internal error")
    else:
        v11 = {"errors": [{"message": _phrase(status)}]}
    return XError(status, _plain_problem(status), status, v11)


def not_found() -> XError:
    body = _v11(34, "Sorry, that page does not exist.")
    return XError(404, body, 404, body)


# --- management routes -----------------------------------------------------------------

X_PROBLEMS = "https://api.x.com/2/problems/"


def problem(status: int, kind: str, title: str, message: str) -> dict[str, Any]:
    """A v2 problem that also carries `errors`, so tweepy's `api_messages` shows the reason.

    X puts the failure name in the message (`"WebhookLimitExceeded: ..."`); `detail` repeats
    it rather than X's generic "One or more parameters to your request was invalid.", so a
    client reading either field finds the reason.
    """
    return {
        "errors": [{"message": message}],
        "title": title,
        "detail": message,
        "type": X_PROBLEMS + kind,
        "status": status,
    }


def v11_body(code: int, message: str) -> dict[str, Any]:
    return _v11(code, message)


def user_context_forbidden() -> XError:
    """An app-only (bearer) route called with OAuth 1.0a user context."""
    detail = (
        "Authenticating with OAuth 1.0a User Context is forbidden for this endpoint.  "
        "Supported authentication types are [OAuth 2.0 Application-Only]."
    )
    return XError(
        403,
        {
            "title": "Unsupported Authentication",
            "detail": detail,
            "type": X_PROBLEMS + "unsupported-authentication",
            "status": 403,
        },
        403,
        _v11(220, "Your credentials do not allow access to this resource."),
    )


def bad_bearer() -> XError:
    """A bearer token that is not the app's."""
    return XError(401, _plain_problem(401), 401, _v11(89, "Invalid or expired token."))


def missing_auth() -> XError:
    return XError(401, _plain_problem(401), 401, _v11(215, "Bad Authentication data."))
