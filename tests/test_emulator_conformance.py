"""The emulator's deliveries have the structure of X's documented examples.

A real emulator delivers each kind of event it produces to a loopback receiver; each delivery
is compared with the matching example in `tests/fixtures/x/` (X's own payloads, found through
`index.json` by envelope and event type), so the emulator cannot drift from X unnoticed.

How two JSON documents are compared (`shape_problems`):
- Types: at every path our value has one of the JSON types X's example has there (numbers are
  one type). Strings are also classed: a decimal integer ("-6850472171600526495"), an ISO 8601
  time, a v1.1 date ("Mon May 19 14:01:46 +0000 2025"), a URL, or text; where X's values are
  all of a class ours must be too ("" passes as text or URL, as X sends "" for unset texts).
- Objects: every key we emit must exist in X's example, and every key X's example always has
  must be emitted. X's examples are real payloads with one account's fields, so some keys
  differ for reasons X documents: `OPTIONAL` (X has it, we may omit it) and `EXTRA` (we emit
  it, X's example does not show it) list each such key with its reason. Nothing else passes.
- Maps keyed by user or app id (`users`, `apps`): each value against every value of X's map.
- Arrays: each element against every element of X's array; a key X's elements always have
  means every one of X's elements has it. Where X's array is empty, `SHAPE_ELSEWHERE` names
  X's example of the same objects elsewhere (or nothing can be checked: an empty array of X's
  stays unchecked, which the rules say).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from catbot.emulator import RunningEmulator
from tests.emulator_fixtures import (
    BOT,
    SECRET,
    SIGNATURE_HEADER,
    EmulatorFactory,
    Receiver,
    hmac_b64,
    tweepy_client,
    wait_valid,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "x"
INDEX = json.loads((FIXTURES / "index.json").read_text(encoding="utf-8"))
FRIEND = "42"
XAA_PAGE = "x-api/activity/event-payloads"
AAA_PAGE = "x-api/account-activity/introduction"
USER_DICTIONARY = "x-api/enterprise-gnip-2.0/fundamentals/data-dictionary"

# --- what may differ from X's examples, and why ----------------------------------------

# Keys X's example has that the emulator may leave out.
OPTIONAL: dict[str, str] = {
    # v2 users (XAA DM `users` map, `includes.users`).
    "data.payload.users{}.data.affiliation": (
        "the badge of an affiliated organisation: only affiliated accounts have one "
        f"({XAA_PAGE}: the examples' accounts are affiliated)"
    ),
    "data.payload.users{}.data.entities": (
        f"links and @names of a bio or URL: X's dm.received example's sender, who has "
        f"neither, has none ({XAA_PAGE})"
    ),
    "data.payload.users{}.data.location": (
        f"absent for an account without a location, as for that same sender ({XAA_PAGE})"
    ),
    "data.includes.users[].affiliation": "as data.payload.users{}.data.affiliation",
    "data.includes.users[].most_recent_tweet_id": (
        "an account that never posted has none (the bot before its first reply)"
    ),
    # Account Activity DMs.
    "direct_message_events[].message_create.source_app_id": (
        f"only when an app sent the message ({AAA_PAGE}: the example's sender used one)"
    ),
    "apps": f"only when a message of the batch was sent through an app ({AAA_PAGE})",
    # Account Activity tweets.
    "tweet_create_events[].extended_tweet": (
        f"only for a post over 140 characters ({AAA_PAGE}, 'Support for longform posts': "
        "the example is one)"
    ),
    "tweet_create_events[].user.description": (
        f"absent for an account without one, as for 4337869213 in the DM example ({AAA_PAGE})"
    ),
    "tweet_create_events[].user.url": "as tweet_create_events[].user.description",
    "user_has_blocked": (
        f"only in the envelope of a post naming the subscribed user ('tweet_create_events "
        f"(@mentions)', {AAA_PAGE}); the one of its own posts ('Posts, Retweets, Replies') "
        "has none"
    ),
    "data.includes.tweets[].entities": (
        f"a post naming nobody has none (X's post.create example, {XAA_PAGE})"
    ),
}

# Keys the emulator emits that X's example does not show: reason, and where X shows their
# shape (a fixture file and a path in it), if it does.
@dataclass(frozen=True)
class Extra:
    reason: str
    shape: tuple[str, str] | None = None


_TWEET_ROOT = (
    f"a root-level attribute of the Tweet object ({USER_DICTIONARY}); X's longform example "
    f"elides the others with '...' ({AAA_PAGE})"
)
EXTRA: dict[str, Extra] = {
    "data.payload.edit_controls": Extra(
        f"every new post has one: X's post.create and post.mention.create examples "
        f"({XAA_PAGE}); its post.reply.create example is shorter",
        ("activity/post_mention_create.json", "data.payload.edit_controls"),
    ),
    "data.includes.users": Extra(
        f"post.reply.create: 'includes may contain related users and tweets' ({XAA_PAGE}); "
        "its example's includes is empty",
        ("activity/post_mention_create.json", "data.includes.users"),
    ),
    "data.includes.tweets": Extra(
        f"post.reply.create: '(including the Post being replied to)' ({XAA_PAGE})",
        ("activity/post_mention_create.json", "data.includes.tweets"),
    ),
    "data.includes.tweets[].in_reply_to_tweet_id": Extra(
        "the replied-to and replying posts in includes carry the reply fields",
        ("activity/post_reply_create.json", "data.payload.in_reply_to_tweet_id"),
    ),
    "data.includes.tweets[].in_reply_to_user_id": Extra(
        "as data.includes.tweets[].in_reply_to_tweet_id",
        ("activity/post_reply_create.json", "data.payload.in_reply_to_user_id"),
    ),
    "data.includes.tweets[].referenced_tweets": Extra(
        "as data.includes.tweets[].in_reply_to_tweet_id",
        ("activity/post_reply_create.json", "data.payload.referenced_tweets"),
    ),
    "is_blocked_by": Extra(
        f"'(Conditional) Shown only for Post mention events if the mentioning user is "
        f"blocked by the subscribed user' ({AAA_PAGE}, data object table; no JSON example)"
    ),
    **{
        f"tweet_create_events[].{key}": Extra(_TWEET_ROOT)
        for key in (
            "source",
            "in_reply_to_status_id",
            "in_reply_to_status_id_str",
            "in_reply_to_user_id",
            "in_reply_to_user_id_str",
            "in_reply_to_screen_name",
            "is_quote_status",
            "lang",
            "timestamp_ms",
        )
    },
}

# Empty arrays in X's example, and where X shows the same objects.
SHAPE_ELSEWHERE: dict[str, str] = {
    "tweet_create_events[].entities.user_mentions": (
        "tweet_create_events[].extended_tweet.entities.user_mentions"
    ),
}

# --- comparing shapes ------------------------------------------------------------------

_STRING_CLASSES = (
    ("decimal", re.compile(r"-?[0-9]+")),
    ("iso8601", re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")),
    ("v11_date", re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d "
                            r"\+0000 \d{4}")),
    ("url", re.compile(r"https?://\S+")),
)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    assert isinstance(value, dict), type(value)
    return "object"


def string_class(value: str) -> str:
    return next((name for name, pattern in _STRING_CLASSES if pattern.fullmatch(value)), "text")


def _is_id_map(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(k.isdigit() for k in value)


def values_at(document: Any, path: str) -> list[Any]:
    """Every value at `path` ("a.b[].c{}.d": `[]` each element, `{}` each map value)."""
    found = [document]
    for part in path.split("."):
        name = part.rstrip("[]{}")
        step = []
        for value in found:
            if isinstance(value, dict) and name in value:
                step.append(value[name])
        for suffix in re.findall(r"\[\]|\{\}", part):
            spread = []
            for value in step:
                if suffix == "[]" and isinstance(value, list):
                    spread.extend(value)
                elif suffix == "{}" and isinstance(value, dict):
                    spread.extend(value.values())
            step = spread
        found = step
    return found


def load_fixture(file: str) -> Any:
    return json.loads((FIXTURES / file).read_text(encoding="utf-8"))


def shape_problems(ours: Any, theirs: list[Any], path: str, fixture: Any) -> list[str]:
    """Where `ours` differs in structure from X's values `theirs` at `path` (see the module
    doc for the rules)."""
    where = path or "(top)"
    types = {json_type(v) for v in theirs}
    mine = json_type(ours)
    if mine not in types:
        return [f"{where}: ours is {mine}, X's is {'/'.join(sorted(types))}"]
    theirs = [v for v in theirs if json_type(v) == mine]
    if mine == "string":
        classes = {string_class(v) for v in theirs if v}
        if ours == "":
            return [] if not classes or classes & {"text", "url"} else [
                f"{where}: ours is empty, X's is {'/'.join(sorted(classes))}"
            ]
        if classes and string_class(ours) not in classes:
            return [f"{where}: {ours!r} is {string_class(ours)}, X's is "
                    f"{'/'.join(sorted(classes))}"]
        return []
    if mine == "array":
        elements = [e for v in theirs for e in v]
        if not elements and path in SHAPE_ELSEWHERE:
            elements = values_at(fixture, SHAPE_ELSEWHERE[path] + "[]")
        if not elements:
            return []
        return [p for item in ours for p in shape_problems(item, elements, path + "[]", fixture)]
    if mine != "object":
        return []
    if _is_id_map(ours) and all(_is_id_map(v) for v in theirs):
        values = [x for v in theirs for x in v.values()]
        return [p for x in ours.values() for p in shape_problems(x, values, path + "{}", fixture)]
    problems: list[str] = []
    known = set().union(*(v.keys() for v in theirs))
    always = set.intersection(*(set(v) for v in theirs))
    prefix = f"{path}." if path else ""
    for key in sorted(always - set(ours)):
        if prefix + key not in OPTIONAL:
            problems.append(f"{prefix}{key}: X's example always has it, ours lacks it")
    for key, value in ours.items():
        here = prefix + key
        if key in known:
            problems += shape_problems(value, [v[key] for v in theirs if key in v], here, fixture)
            continue
        extra = EXTRA.get(here)
        if extra is None:
            problems.append(f"{here}: ours has it, X's example does not")
        elif extra.shape is not None:
            file, elsewhere = extra.shape
            problems += shape_problems(value, values_at(load_fixture(file), elsewhere), here,
                                       fixture)
    return problems


def fixture_for(envelope: str, event_type: str, outcome: str | None = None) -> tuple[str, Any]:
    """X's example for a kind of delivery, found through the fixtures' index."""
    entries = [
        entry
        for entry in INDEX["fixtures"]
        if entry["envelope"] == envelope
        and entry["event_type"] == event_type
        and (outcome is None or entry["outcome"] == outcome)
    ]
    assert len(entries) == 1, (envelope, event_type, outcome, entries)
    return entries[0]["file"], load_fixture(entries[0]["file"])


def assert_conforms(delivery: Any, envelope: str, event_type: str, outcome: str | None) -> None:
    file, example = fixture_for(envelope, event_type, outcome)
    problems = shape_problems(delivery, [example], "", example)
    assert not problems, f"differs from {file}:\n" + "\n".join(problems)


# --- the emulator delivering each kind it produces ---------------------------------------

LONG_TEXT = " ".join(f"word{i}" for i in range(60)) + " @catbot"  # the mention past 140


async def control(
    http: aiohttp.ClientSession, emulator: RunningEmulator, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    async with http.post(f"{emulator.url}/_emulator/{path}", json=body) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 200, answer
        return answer


async def bot_post(http: aiohttp.ClientSession, emulator: RunningEmulator) -> str:
    response = await tweepy_client(http, emulator).create_tweet(
        text="Cats sleep about 15 hours a day.", user_auth=True
    )
    post_id: str = response.data["id"]
    return post_id


async def bot_dm(http: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
    await tweepy_client(http, emulator).create_direct_message(
        participant_id=FRIEND, text="Cats have five toes on their front paws.", user_auth=True
    )


async def subscribe_dm_sent(http: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
    hook = await wait_valid(http, emulator)
    await tweepy_client(http, emulator).request(
        "POST",
        "/2/activity/subscriptions",
        params={},
        json={
            "event_type": "dm.sent",
            "filter": {"user_id": BOT},
            "webhook_id": hook["id"],
            "tag": "outbound",
        },
        user_auth=True,
    )


Play = Callable[[aiohttp.ClientSession, RunningEmulator], Awaitable[None]]


async def user_dm(http: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
    await control(http, emulator, "dm", {"sender_id": FRIEND, "text": "hello cat"})


async def dm_from_the_bot(http: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
    await user_dm(http, emulator)
    await bot_dm(http, emulator)


async def dm_sent(http: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
    await subscribe_dm_sent(http, emulator)
    await bot_dm(http, emulator)


async def short_mention(http: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
    await control(http, emulator, "mention", {"sender_id": FRIEND, "text": "a fact, please"})


async def long_mention(http: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
    await control(
        http, emulator, "mention", {"sender_id": FRIEND, "text": LONG_TEXT, "is_blocked_by": False}
    )


async def reply_to_bot(http: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
    target = await bot_post(http, emulator)
    await control(
        http,
        emulator,
        "mention",
        {"sender_id": FRIEND, "text": "@catbot another", "in_reply_to_tweet_id": target},
    )


async def bots_reply(http: aiohttp.ClientSession, emulator: RunningEmulator) -> None:
    asked = await control(http, emulator, "mention", {"sender_id": FRIEND, "text": "hi"})
    await tweepy_client(http, emulator).create_tweet(
        text="@user42 Cats purr.", in_reply_to_tweet_id=asked["tweet_id"], user_auth=True
    )


@dataclass(frozen=True)
class Case:
    api: str
    play: Play
    # Which delivery to check: the envelope's event type / Account Activity array, and for
    # Account Activity whose author (the bot's own, or the friend's).
    envelope: str
    event_type: str
    outcome: str | None = None
    author: str | None = None
    # A tier with room for a fourth subscription (dm.sent beside the bot's three).
    max_subscriptions: int = 3


CASES = {
    "xaa dm.received": Case("activity", user_dm, "activity", "dm.received"),
    "xaa dm.sent": Case("activity", dm_sent, "activity", "dm.sent", max_subscriptions=4),
    "xaa post.mention.create": Case(
        "activity", short_mention, "activity", "post.mention.create"
    ),
    "xaa post.mention.create, long": Case(
        "activity", long_mention, "activity", "post.mention.create"
    ),
    "xaa post.reply.create": Case("activity", reply_to_bot, "activity", "post.reply.create"),
    "aaa direct_message_events, user": Case(
        "v2", user_dm, "account_activity", "direct_message_events", author=FRIEND
    ),
    "aaa direct_message_events, bot via app": Case(
        "v2", dm_from_the_bot, "account_activity", "direct_message_events", author=BOT
    ),
    "aaa tweet_create_events, mention": Case(
        "v2", short_mention, "account_activity", "tweet_create_events", "public_reply", FRIEND
    ),
    "aaa tweet_create_events, long mention": Case(
        "v2", long_mention, "account_activity", "tweet_create_events", "public_reply", FRIEND
    ),
    "aaa tweet_create_events, reply to the bot": Case(
        "v2", reply_to_bot, "account_activity", "tweet_create_events", "public_reply", FRIEND
    ),
    "aaa tweet_create_events, the bot's reply": Case(
        "v2", bots_reply, "account_activity", "tweet_create_events", "public_reply", BOT
    ),
}


def _author(delivery: dict[str, Any], event_type: str) -> str | None:
    for event in delivery.get(event_type, []):
        if event_type == "direct_message_events":
            return str(event["message_create"]["sender_id"])
        return str(event["user"]["id_str"])
    return None


def pick(receiver: Receiver, case: Case) -> dict[str, Any] | None:
    for headers, body in receiver.posts:
        assert headers[SIGNATURE_HEADER] == hmac_b64(SECRET, body)
        delivery: dict[str, Any] = json.loads(body)
        if case.envelope == "activity":
            if delivery.get("data", {}).get("event_type") == case.event_type:
                return delivery
        elif _author(delivery, case.event_type) == case.author:
            return delivery
    return None


@pytest.mark.parametrize("name", list(CASES))
async def test_emulator_delivers_what_x_documents(
    name: str, make_emulator: EmulatorFactory, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    case = CASES[name]
    emulator = await make_emulator(
        receiver.url, api=case.api, max_subscriptions=case.max_subscriptions
    )
    await wait_valid(http, emulator)
    await case.play(http, emulator)
    delivery = None
    for _ in range(5):
        delivery = pick(receiver, case)
        if delivery is not None:
            break
        await receiver.wait_posts(len(receiver.posts) + 1)
    assert delivery is not None, f"{name}: no such delivery in {len(receiver.posts)} posts"
    assert_conforms(delivery, case.envelope, case.event_type, case.outcome)


# --- the comparison itself can fail ----------------------------------------------------


def test_comparison_catches_the_old_activity_shapes() -> None:
    """The emulator's shapes before issue 14: a UUID `event_uuid`, the post under
    `payload.data` with `includes` inside `payload`. Each is reported."""
    _, example = fixture_for("activity", "post.mention.create")
    post = dict(example["data"]["payload"])
    old = {
        "data": {
            "event_uuid": "8c4d2a52-51c8-4b4f-9d1e-2b1b7d6f1c11",
            "filter": example["data"]["filter"],
            "event_type": "post.mention.create",
            "tag": "catbot",
            "payload": {"data": post, "includes": example["data"]["includes"]},
        }
    }
    problems = shape_problems(old, [example], "", example)
    assert any(p.startswith("data.event_uuid:") for p in problems), problems
    assert "data.payload.data: ours has it, X's example does not" in problems
    assert "data.payload.includes: ours has it, X's example does not" in problems
    assert "data.payload.id: X's example always has it, ours lacks it" in problems
    assert "data.includes: X's example always has it, ours lacks it" in problems
    # And X's own example passes, so the rules are not simply refusing everything.
    assert shape_problems(example, [example], "", example) == []


def test_comparison_checks_types_inside_maps_and_arrays() -> None:
    _, example = fixture_for("account_activity", "direct_message_events")
    changed = json.loads(json.dumps(example))
    [user_id, *_] = changed["users"]
    changed["users"][user_id]["followers_count"] = "22"  # a string where X has a number
    changed["direct_message_events"][0]["created_timestamp"] = "yesterday"
    problems = shape_problems(changed, [example], "", example)
    assert problems == [
        "direct_message_events[].created_timestamp: 'yesterday' is text, X's is decimal",
        "users{}.followers_count: ours is string, X's is number",
    ], problems
