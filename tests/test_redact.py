"""The redaction policy, its properties, and the canary corpus through every output."""

from __future__ import annotations

import io
import logging
import os
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend_kit import ConfigError, configure_logging, get_logger, load_settings, request_context
from backend_kit._active import get_redactor
from backend_kit._redact import MASK, Redactor, mask_url
from backend_kit._sentry import reset_sentry
from backend_kit.testing import override_settings

from .sentry_receiver import sentry_receiver

REDACTOR = Redactor()


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "API-KEY",
        "authorization",
        "Proxy-Authorization",
        "cookie",
        "Set-Cookie",
        "session",
        "csrf",
        "csrfmiddlewaretoken",
        "private_key",
        "dsn",
        "X-Session-Token",
        "db_password",
        "PASSWORD",
        "client_secret",
    ],
)
def test_sensitive_keys_are_masked(key: str) -> None:
    assert REDACTOR.redact({key: "value-1234"}) == {key: MASK}
    assert REDACTOR.is_sensitive_key(key)


@pytest.mark.parametrize("key", ["user", "path", "status", "duration_ms", "request_id", "event"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert REDACTOR.redact({key: "value"}) == {key: "value"}


def test_recursion_through_dicts_lists_tuples_and_header_pairs() -> None:
    data = {
        "auth": {"secret": "s1", "user": "ann"},
        "items": [{"token": "t1"}, ("password", "p1"), ["Cookie", "c=1"], "plain"],
        "pairs": (("Accept", "json"), ("Authorization", "Basic abc")),
        "count": 3,
        "nothing": None,
        "token": None,
    }
    assert REDACTOR.redact(data) == {
        "auth": {"secret": MASK, "user": "ann"},
        "items": [{"token": MASK}, ("password", MASK), ["Cookie", MASK], "plain"],
        "pairs": (("Accept", "json"), ("Authorization", MASK)),
        "count": 3,
        "nothing": None,
        "token": None,
    }


def test_input_is_not_modified() -> None:
    data = {"password": "p", "nested": {"token": "t"}}
    REDACTOR.redact(data)
    assert data == {"password": "p", "nested": {"token": "t"}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgres://app:s3cret@db:5432/app", "postgres://app:***@db:5432/app"),
        ("see https://abc123@o1.ingest.sentry.io/42", "see https://***@o1.ingest.sentry.io/42"),
        ("GET /reset?token=abc&page=2", "GET /reset?token=***&page=2"),
        ("/x?api_key=k1&apikey=k2&session_id=s3", "/x?api_key=***&apikey=***&session_id=***"),
        ("Authorization: Bearer eyJ.abc.def", "Authorization: Bearer ***"),
        ("header Basic dXNlcjpwYXNz= sent", "header Basic *** sent"),
        ('{"password": "hunter2", "user": "ann"}', '{"password": "***", "user": "ann"}'),
        ("db_password=hunter2 user=ann", "db_password=*** user=ann"),
        ("Cookie: sessionid=abc; auth=xyz\nnext line", "Cookie: ***\nnext line"),
        ("set-cookie: csrftoken=abc; Path=/", "set-cookie: ***"),
        ("nothing to hide here", "nothing to hide here"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
            "***",
        ),
    ],
)
def test_secrets_inside_text(text: str, expected: str) -> None:
    assert REDACTOR.redact_text(text) == expected


def test_exact_secret_values_from_the_settings_are_masked_anywhere() -> None:
    settings = load_settings(
        health_token="h3alth-t0ken",
        database_url="postgres://app:Pg-Passw0rd@db/app",
        sentry_dsn="https://dsnkey123@o1.ingest.sentry.io/1",
    )
    redactor = Redactor.from_settings(settings)
    text = "user pasted h3alth-t0ken; pw Pg-Passw0rd; key dsnkey123 seen"
    assert redactor.redact_text(text) == "user pasted ***; pw ***; key *** seen"


def test_extra_keys_and_patterns_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDACT_KEYS", "ssn,iban")
    monkeypatch.setenv("REDACT_PATTERNS", r"\bEMP-\d{6}\b")
    redactor = Redactor.from_settings(load_settings())
    assert redactor.redact({"customer_ssn": "123", "IBAN": "DE89"}) == {
        "customer_ssn": MASK,
        "IBAN": MASK,
    }
    assert redactor.redact_text("employee EMP-123456 ok") == "employee *** ok"


def test_get_redactor_follows_the_active_settings() -> None:
    with override_settings(health_token="first-token-1"):
        assert get_redactor().redact_text("first-token-1") == MASK
    with override_settings(health_token="second-token-2"):
        assert get_redactor().redact_text("first-token-1 second-token-2") == f"first-token-1 {MASK}"


def test_output_mode_stringifies_unknown_objects_redacted() -> None:
    class Client:
        def __str__(self) -> str:
            return "Client(redis://:pw1234@cache:6379)"

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    out = REDACTOR.redact_for_output(
        {"client": Client(), "broken": Broken(), "n": 1, "tags": {"a"}}
    )
    assert out["client"] == "Client(redis://:***@cache:6379)"
    assert out["broken"].endswith("Broken object (str() failed)>")
    assert (out["n"], out["tags"]) == (1, ["a"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token=abc", "token=***"),
        ('"token": "abc"', '"token": "***"'),
        ("token: abc", "token: ***"),
        ("{'api_key': 'k1', 'user': 'ann'}", "{'api_key': '***', 'user': 'ann'}"),
        ('"password": "ab\\"cd", "n": 1', '"password": "***", "n": 1'),
        ("missing fields: ('token', 'user')", "missing fields: ('token', 'user')"),
        ("missing fields: token", "missing fields: token"),
        ("['password', 'session']", "['password', 'session']"),
        ("the token expired", "the token expired"),
    ],
)
def test_assignments_are_masked_and_mentions_left_alone(text: str, expected: str) -> None:
    assert REDACTOR.redact_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 ok", "card **** **** **** 1111 ok"),
        ("card 4111-1111-1111-1111", "card ****-****-****-1111"),
        ('{"card": "4111111111111111"}', '{"card": "************1111"}'),
        ("amex 378282246310005.", "amex ***********0005."),
        (
            "19 digits 6011000990139424 and 4222222222222",
            "19 digits ************9424 and *********2222",
        ),
        ("paid 4111 1111 1111 1111 200 EUR", "paid **** **** **** 1111 200 EUR"),
        ("card 4222000018080006 2 times", "card ************0006 2 times"),
        ("amex 3782 822463 10005", "amex **** ****** *0005"),
        # Not Luhn-valid, inside a word or an id, too short, or not grouped like a card.
        ("order 4111111111111112", "order 4111111111111112"),
        ("id ab4111111111111111cd", "id ab4111111111111111cd"),
        ("phone 0044 20 7946 0958", "phone 0044 20 7946 0958"),
        ("took 1234567 us", "took 1234567 us"),
        ("1 2 3 4 5 6 7 8 9 1 2 3 4 5 6 7", "1 2 3 4 5 6 7 8 9 1 2 3 4 5 6 7"),
    ],
)
def test_card_numbers_keep_only_their_last_four_digits(text: str, expected: str) -> None:
    assert REDACTOR.redact_text(text) == expected


def test_card_masking_can_be_turned_off() -> None:
    redactor = Redactor.from_settings(load_settings(redact_card_numbers=False))
    assert redactor.redact_text("4111 1111 1111 1111") == "4111 1111 1111 1111"


def test_long_text_is_cut_with_a_marker_before_it_is_scanned() -> None:
    redactor = Redactor(max_length=1000)
    text = "token=abc " + "x" * 5000
    redacted = redactor.redact_text(text)
    assert redacted == "token=*** " + "x" * 990 + "…[4010 characters cut]"
    assert Redactor.from_settings(load_settings(redact_max_length=4096)).max_length == 4096


@pytest.mark.parametrize("pattern", [r"(a+)\1", r"secret(?=x)", r"(?<=key=)\w+", r"(?!x)y"])
def test_a_user_pattern_that_needs_backtracking_is_refused_at_load(pattern: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(redact_patterns=[r"\bEMP-\d+", pattern])
    message = str(caught.value)
    assert "REDACT_PATTERNS" in message
    assert "pattern number 2" in message
    assert repr(pattern) in message
    assert "linear time" in message


def test_a_user_pattern_runs_in_linear_time() -> None:
    # (a|a)*b and (a+)+b backtrack exponentially on Python's engine; RE2 cannot.
    redactor = Redactor(patterns=[r"(a|a)*b", r"(a+)+c"], max_length=1 << 20)
    start = time.perf_counter()
    assert redactor.redact_text("a" * 100_000 + "!") == "a" * 100_000 + "!"
    assert time.perf_counter() - start < 1.0  # the backtracking engine would not finish


# Families of hostile text: each one made many characters of the regular expressions
# of the previous redactor rescan the same input from every position.
_HOSTILE = {
    "word run then key word": lambda n: "/," + "a" * n + "token",
    "key words back to back": lambda n: "token" * (n // 5),
    "key word, word run, separator": lambda n: "token" + "a" * n + "=",
    "'.' run then a URL": lambda n: "a." * (n // 2) + " x://@",
    "scheme openings": lambda n: "://a:" * (n // 5),
    "spaced digits": lambda n: "1 " * (n // 2),
    "nested quotes": lambda n: "token=\"'" * (n // 8),
}


@pytest.mark.parametrize("family", sorted(_HOSTILE))
def test_hostile_text_is_redacted_in_linear_time(family: str) -> None:
    """300 KB of hostile text is redacted in well under a second (a few milliseconds on
    a quiet machine). The quadratic redactor took about 0.7 s for 4 KB of the first
    family, so it would need hours here: the bound cannot be met by accident."""
    redactor = Redactor(max_length=1 << 20)
    text = _HOSTILE[family](300_000)
    start = time.perf_counter()
    redactor.redact_text(text)
    assert time.perf_counter() - start < 1.0


# --- properties -------------------------------------------------------------------------

_plain_text = st.text(
    alphabet=st.characters(blacklist_characters="*", blacklist_categories=("Cs",))
)
_secret = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.",
    min_size=4,
    max_size=40,
)


@given(before=_plain_text, secret=_secret, after=_plain_text)
def test_a_secret_value_never_survives_in_text(before: str, secret: str, after: str) -> None:
    redactor = Redactor(secret_values=[secret])
    assert secret not in redactor.redact_text(before + secret + after)


_sensitive_names = st.sampled_from(
    ["password", "X-Session-Token", "db_password", "API_KEY", "cookie", "Authorization", "csrf"]
)
_safe_names = st.sampled_from(["name", "count", "items", "path", "user", "status"])
_leaves = st.none() | st.booleans() | st.integers() | st.text(alphabet="abcdef ", max_size=10)


def _tree(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(_safe_names, children, max_size=4)
    )


_safe_data = st.recursive(_leaves, _tree, max_leaves=20)


@given(_safe_data)
def test_data_without_secrets_is_unchanged(data: Any) -> None:
    assert REDACTOR.redact(data) == data


# A marker that cannot occur in the safe data's repr, so "not in repr" is meaningful.
_marked_secret = _secret.map(lambda value: "zqx" + value)


@given(_safe_data, _sensitive_names, _marked_secret, st.integers(min_value=0, max_value=5))
def test_a_value_under_a_sensitive_key_is_masked_at_any_depth(
    data: Any, key: str, secret: str, depth: int
) -> None:
    nested: Any = {key: secret}
    for level in range(depth):
        nested = [data, nested] if level % 2 else {"items": nested, "other": data}
    redacted = REDACTOR.redact(nested)
    assert secret not in repr(redacted)
    for level in reversed(range(depth)):
        redacted = redacted[1] if level % 2 else redacted["items"]
    assert redacted == {key: MASK}


@given(st.recursive(st.none() | st.integers() | st.floats() | st.text(), _tree, max_leaves=30))
def test_redaction_never_raises_on_json_like_data(data: Any) -> None:
    REDACTOR.redact(data)
    REDACTOR.redact_for_output({"data": data})


@given(
    name=st.sampled_from(
        ["token", "access_token", "api_key", "password", "session", "X-Csrf-Token"]
    ),
    value=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=30),
)
def test_sensitive_query_parameters_are_masked(name: str, value: str) -> None:
    redacted = REDACTOR.redact_text(f"GET /path?{name}={value}&page=2 HTTP/1.1")
    assert redacted == f"GET /path?{name}={MASK}&page=2 HTTP/1.1"


@given(
    user=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10),
    password=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyz0123456789!$%^()", min_size=1, max_size=20
    ),
)
def test_url_passwords_are_masked(user: str, password: str) -> None:
    url = f"postgres://{user}:{password}@db.internal:5432/app"
    assert mask_url(url) == f"postgres://{user}:{MASK}@db.internal:5432/app"


# --- the canary corpus -----------------------------------------------------------------


def _canary() -> str:
    # Made at run time: the value never appears in this file's source, which Sentry
    # would ship as source context around a frame.
    return "CNRY" + os.urandom(6).hex()


class Corpus:
    """Secret shapes, each carrying a unique canary value."""

    def __init__(self) -> None:
        self.settings_secret = _canary()
        self.database_password = _canary()
        self.dsn_password = _canary()
        self.exception_token = _canary()
        c = [_canary() for _ in range(15)]
        self.values = [
            self.settings_secret,
            self.database_password,
            self.dsn_password,
            self.exception_token,
            *c,
        ]
        self.fields: dict[str, Any] = {
            "headers": {"Authorization": f"Bearer {c[0]}", "Accept": "application/json"},
            "cookie_header": {"Cookie": f"sessionid={c[1]}; theme=dark"},
            "password": c[2],
            "url": f"https://shop.example/reset?token={c[3]}&lang=en",
            "payload": {"auth": {"secret": c[4]}},
            "sentry": f"https://public:{self.dsn_password}@o1.ingest.sentry.io/1",
            "wsgi_headers": [("X-Session-Token", c[5]), ("Accept", "text/html")],
            "config": {"db_password": c[6]},
            "upstream": f"calling https://api.example/v1?api_key={c[7]}",
            "proxy": {"Proxy-Authorization": f"Basic {c[8]}"},
            "response": f"Set-Cookie: csrftoken={c[9]}; Path=/",
            "db": f"postgres://app:{self.database_password}@db/app",
            "note": f"the user pasted {self.settings_secret} into the search box",
            "json_blob": f'{{"client_secret": "{c[10]}", "user": "ann"}}',
            "key": f"-----BEGIN PRIVATE KEY-----\n{c[11]}\n-----END PRIVATE KEY-----",
            "pair": ("apikey", c[12]),
            "free_text_bearer": f"retrying with bearer {c[13]}",
            # A password holding every character that ends a URL part, and "@" twice.
            "odd_url": f"redis://cache:p@{c[14]}/#?:x@y@cache:6379/0 refused",
        }
        self.message = f"GET /reset?token={c[3]} failed for {self.settings_secret}"

    def settings(self, **extra: Any) -> Any:
        return load_settings(
            health_token=self.settings_secret,
            database_url=f"postgres://app:{self.database_password}@db/app",
            **extra,
        )

    def raise_error(self) -> None:
        raise ConnectionError(f"upstream refused Authorization: Bearer {self.exception_token}")

    def emit(self) -> None:
        """Push every shape through structlog, stdlib logging and tracebacks."""
        log = get_logger("canary")
        stdlib = logging.getLogger("werkzeug")
        with request_context("canary-request"):
            log.info(self.message, **self.fields)
            stdlib.info(
                self.message + " %s",
                self.fields["url"],
                extra={"cookie": self.fields["cookie_header"]},
            )
            for name, value in self.fields.items():
                log.warning("shape", **{name: value})
                if isinstance(value, (tuple, list)):
                    # A tuple formatted into free text is a mere mention of a sensitive
                    # name ("('token', 'user')"); only a real pair is recognised.
                    stdlib.warning("shape %s", name, extra={"pairs": value})
                else:
                    stdlib.warning("shape %s=%s", name, value)
            try:
                self.raise_error()
            except ConnectionError:
                log.exception(self.message, **self.fields)
                stdlib.exception(self.message)
            log.error("plain error", **self.fields)

    def assert_absent(self, text: str) -> None:
        found = [value for value in self.values if value in text]
        assert found == [], f"{len(found)} canary values leaked"


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.parametrize("traceback_locals", [False, True])
def test_canary_corpus_never_reaches_a_log_line(log_format: str, traceback_locals: bool) -> None:
    corpus = Corpus()
    stream = io.StringIO()
    configure_logging(
        corpus.settings(),
        format=log_format,  # type: ignore[arg-type]
        stream=stream,
        traceback_locals=traceback_locals,
    )
    corpus.emit()
    text = stream.getvalue()
    assert text.count("canary-request") >= 2 * len(corpus.fields) + 5  # everything was written
    assert "Traceback" in text or '"exception"' in text
    corpus.assert_absent(text)


def test_canary_corpus_never_reaches_sentry() -> None:
    corpus = Corpus()
    with sentry_receiver() as receiver:
        settings = corpus.settings(
            sentry_dsn=receiver.dsn, log_traceback_locals=True, sentry_traces_sample_rate=1.0
        )
        configure_logging(settings, format="json", stream=io.StringIO())
        import sentry_sdk

        from backend_kit import configure_sentry

        assert configure_sentry(settings)
        with sentry_sdk.start_transaction(
            name=corpus.fields["url"], op="http.server"
        ) as transaction:
            transaction.set_data("request_headers", corpus.fields["headers"])
            with sentry_sdk.start_span(op="db", name=corpus.fields["db"]) as span:
                span.set_data("params", corpus.fields["config"])
            corpus.emit()
        # log.exception and log.error; the stdlib logger's report of the same exception
        # object is deduplicated, and warnings are breadcrumbs.
        expected_events = 2
        receiver.wait_for(lambda r: len(r.events) >= expected_events and len(r.transactions) == 1)
        reset_sentry(timeout=5)
        events = receiver.events
        bodies = b"".join(receiver.raw_bodies).decode()
    assert len(events) == expected_events
    crumbs = [crumb for event in events for crumb in event["breadcrumbs"]["values"]]
    assert len(crumbs) >= 2 * len(corpus.fields)  # the warnings became breadcrumbs
    assert all(event["tags"]["request_id"] == "canary-request" for event in events)
    assert sum("exception" in event for event in events) == 1
    corpus.assert_absent(bodies)


_alnum_text = st.text(
    alphabet=st.sampled_from("0123456789abcdefXYZ٣éß"), min_size=0, max_size=40
) | st.from_regex(r"[1-9][0-9]{12,18}", fullmatch=True)


@given(text=_alnum_text, secret=st.sampled_from(["", "abcd", "5555", "ef01"]))
def test_letters_and_digits_skip_the_scan_with_the_same_result(text: str, secret: str) -> None:
    # Text of letters and digits alone (ids, hashes) takes a shortcut past the patterns:
    # it must end exactly where the full scan ends.
    redactor = Redactor(secret_values=[secret] if secret else [])
    assert redactor.redact_text(text) == redactor._redact_text(text)


def test_letters_and_digits_that_are_a_card_or_hold_a_secret_are_still_masked() -> None:
    redactor = Redactor(secret_values=["HUNTER2ZZ"])
    assert redactor.redact_text("4111111111111111") == "************1111"
    assert redactor.redact_text("xHUNTER2ZZy") == "x***y"
    # The secret's mask leaves a card number standing alone: masked too.
    assert redactor.redact_text("4111111111111111HUNTER2ZZ") == "************1111***"
    assert redactor.redact_text("c3fc1b7901b6747ff697c052d164f855") == (
        "c3fc1b7901b6747ff697c052d164f855"
    )


_uuid_group_alphabet = st.sampled_from("0123456789abcdefXYZ٣é")
_uuid_layout_text = st.builds(
    lambda *groups: "-".join(groups),
    *(st.text(_uuid_group_alphabet, min_size=n, max_size=n) for n in (8, 4, 4, 4, 12)),
) | st.builds(
    # Digits only: whatever runs of digits the groups hold, Luhn-valid or not, the card
    # rule must find nothing to mask in a UUID's layout.
    lambda digits: f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}",
    st.from_regex(r"[0-9]{32}", fullmatch=True),
)


@given(text=_uuid_layout_text, secret=st.sampled_from(["", "abcd", "5555", "ef01-"]))
def test_uuids_skip_the_scan_with_the_same_result(text: str, secret: str) -> None:
    redactor = Redactor(secret_values=[secret] if secret else [])
    assert redactor.redact_text(text) == redactor._redact_text(text)
    assert redactor.redact_for_output({"task_id": text}) == {"task_id": redactor._redact_text(text)}


def test_a_uuid_is_written_as_it_is_and_not_memoised() -> None:
    redactor = Redactor()
    task_id = "3f2b8c1e-9d4a-4c6b-8e2f-1a7d5c9b0e44"
    assert redactor.redact_text(task_id) == task_id
    assert task_id not in redactor._text_cache  # unique ids would evict the useful entries
    # A test card's digits spread over the groups: the full scan finds no card either.
    spread_card = "12345678-4111-1111-1111-111100000000"
    assert redactor.redact_text(spread_card) == redactor._redact_text(spread_card) == spread_card
    # A fifth dash breaks the layout: the full scan runs, and finds the card in it.
    grouped_card = "11111111-4111-1111-1111-1111-111111"
    assert redactor.redact_text(grouped_card) == "11111111-****-****-****-1111-111111"
    # A pattern of the user's may match anything: no shortcut then.
    strict = Redactor(patterns=[r"9d4a"])
    assert strict.redact_text(task_id) == "3f2b8c1e-***-4c6b-8e2f-1a7d5c9b0e44"


@given(text=_alnum_text, secret=st.sampled_from(["", "abcd", "5555"]))
def test_letters_and_digits_in_an_event_end_as_the_full_scan_ends(text: str, secret: str) -> None:
    redactor = Redactor(secret_values=[secret] if secret else [])
    assert redactor.redact_for_output({"id": text}) == {"id": redactor._redact_text(text)}
