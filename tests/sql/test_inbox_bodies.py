"""Message bodies come back byte for byte through the claim's bodies array: any Unicode,
the characters that array literals quote, and bodies up to 64 KiB. (NUL cannot be stored
in a PostgreSQL text at all.)"""

from __future__ import annotations

from inboxkit import claim, complete, ingest, ingest_many
from sqlkit import Conn

KIB64 = 64 * 1024

SAMPLES = [
    "",
    " ",
    "NULL",  # an unquoted NULL in an array literal is SQL NULL
    "null",
    '"quoted" and \\backslashed\\',
    "{braces}, commas, and ; semicolons",
    "tab\tnewline\ncarriage return\r\nend",
    "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 skin tone",
    "مرحبا بالعالم — שלום עולם (right to left)",
    "\u202eembedded override\u202c and \u200f marks",
    "e\u0301 a\u0308 n\u0303 (combining)  é ä ñ (precomposed)",
    "Z\u0351\u0364\u036b\u0300a\u0350\u0302l\u0357g\u0300o",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "\U0001f600\U0010ffff\ue000 astral and private use",
    "line\u2028separator\u2029paragraph",
    "\x01\x07\x1b[31m control characters \x7f",
    "   leading and trailing spaces   ",
]


def body_of_bytes(size: int, seed: str) -> str:
    """A body of exactly `size` UTF-8 bytes, mixing characters of 1 to 4 bytes."""
    pattern = f"{seed} ascii é ش 中 👍🏽 e\u0301 "
    text = ""
    while len(text.encode()) < size:
        text += pattern
    encoded = text.encode()[:size]
    while True:  # cut back to a whole character, then pad with ASCII to the exact size
        try:
            cut = encoded.decode()
            break
        except UnicodeDecodeError:
            encoded = encoded[:-1]
    return cut + "." * (size - len(cut.encode()))


def test_bodies_round_trip_byte_for_byte_in_arrival_order(conn: Conn) -> None:
    big = [body_of_bytes(KIB64, "first"), body_of_bytes(KIB64 - 1, "second")]
    assert [len(b.encode()) for b in big] == [KIB64, KIB64 - 1]
    bodies = [*SAMPLES, *big]
    stored = ingest_many(conn, [(f"m{i}", "c", body) for i, body in enumerate(bodies)])

    [burst] = claim(conn)
    assert burst.message_ids == [m.message_id for m in stored]
    assert len(burst.bodies) == len(bodies)
    for i, (got, sent) in enumerate(zip(burst.bodies, bodies, strict=True)):
        assert got.encode() == sent.encode(), f"body {i} ({sent[:20]!r}) came back changed"
    assert burst.bodies[2] == "NULL"
    assert complete(conn, "c", burst.claim_token)

    # the stored body is what a repeat is compared with: the same bytes are a duplicate
    for i, body in enumerate(bodies):
        assert ingest(conn, f"m{i}", "c", body).duplicate


def test_a_single_64_kib_body_alone_in_a_burst(conn: Conn) -> None:
    body = body_of_bytes(KIB64, "alone")
    stored = ingest(conn, "big", "c", body)
    [burst] = claim(conn)
    assert burst.message_ids == [stored.message_id]
    assert burst.bodies[0].encode() == body.encode()
    assert complete(conn, "c", burst.claim_token)
