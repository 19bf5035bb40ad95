"""From a model's answer to WhatsApp parts (pgcoord.demo.parts): fences, malformed JSON,
over-long parts cut at word boundaries, unicode counted in characters, validation."""

from __future__ import annotations

import json
import unicodedata

import pytest

from pgcoord.demo.parts import (
    MIN_TEXT,
    PART_LIMIT,
    InvalidText,
    fit,
    message_of,
    part_key,
    split_parts,
    validate,
)


@pytest.mark.parametrize(
    ("answer", "parts"),
    [
        ('["Hello Ana!", "Your order ships today."]', ["Hello Ana!", "Your order ships today."]),
        ('  [" padded ", "", "   ", "kept"]\n', ["padded", "kept"]),
        ('```json\n["fenced", "answer"]\n```', ["fenced", "answer"]),
        ('```JSON\n["upper case"]```', ["upper case"]),
        ('```\n["bare fence"]\n```', ["bare fence"]),
        ('Here you go:\n```json\n["after prose"]\n```\nEnjoy!', ["after prose"]),
        ('```json\n["never closed", "fence"]', ["never closed", "fence"]),
        ('"a JSON string"', ["a JSON string"]),
        ('{"parts": ["an object", "of parts"]}', ["an object", "of parts"]),
        ('```jsonc\n["a tag", "of its own"]\n```', ["a tag", "of its own"]),
        ('``` json\n["a space before the tag"]\n```', ["a space before the tag"]),
        ('````json\n["four backticks"]\n````', ["four backticks"]),
        ('```json["no newline"]```', ["no newline"]),
        ('Here are the parts: ["in", "prose"] Enjoy!', ["in", "prose"]),
        ('{"message": "Hi Anna", "meta": {"count": 2, "vip": true}}', ["Hi Anna"]),
        (
            '["Use ```SUMMER-SALE``` at checkout", "Reply STOP to opt out"]',
            ["Use ```SUMMER-SALE``` at checkout", "Reply STOP to opt out"],
        ),
        ('["multi\\nline part"]', ["multi\nline part"]),
    ],
)
def test_parts_from_a_json_list(answer: str, parts: list[str]) -> None:
    assert split_parts(answer) == parts


@pytest.mark.parametrize(
    ("answer", "part"),
    [
        ("Hello Ana, your order ships today.", "Hello Ana, your order ships today."),
        ("```json\nnot JSON inside the fence\n```", "not JSON inside the fence"),
        ("  \n plain text, trimmed \n", "plain text, trimmed"),
        ("Use code ```SAVE10``` at checkout today", "Use code ```SAVE10``` at checkout today"),
        ("[Promo] 20% off this weekend", "[Promo] 20% off this weekend"),
        ("Offer ends Sunday [1]. Terms apply.", "Offer ends Sunday [1]. Terms apply."),
        ("Your basket [] is waiting for you", "Your basket [] is waiting for you"),
        ("Use code ```2024``` at checkout today", "Use code ```2024``` at checkout today"),
        ('Get ```"20% off"``` on all shoes', 'Get ```"20% off"``` on all shoes'),
    ],
)
def test_an_answer_that_is_not_json_is_one_part(answer: str, part: str) -> None:
    """The safe fallback: prose goes as it is (WhatsApp shows ```code``` as monospace)."""
    assert split_parts(answer) == [part]


@pytest.mark.parametrize(
    "answer",
    [
        '["Hello Ana", "your order ships",]',
        '["truncated',
        '  {"unclosed": ',
        '["a list", 42, null]',
        '{"a": 1}',
        '{"parts": ["one list"], "more": ["of two"]}',
        "42",
        "null",
        '{"message": "Hi Anna", "hashtags": ["sale", "vip"]}',  # which is the text?
        '{"message": "Hi Anna", "meta": {"tags": ["summer-sale", "vip"]}}',
        '{"parts": "[\\"Hi Anna\\", \\"Reply STOP\\"]"}',  # JSON inside JSON
        '[Promo] Here you go: ["Hi Anna"]',
        'Here you go: ["Hi Anna", "Reply STOP",]',
        "Here you go: ['Hi Anna', 'Reply STOP']",
        'Sure! {"message": "Hi Anna, 20% off!", "tags": ["sale", "vip"]}',
        'Hi Anna, your order has shipped and arrives on Monday! ["Track it here"]',
        'Here:\n```json\n["a"]\n```\nand\n```json\n["b"]\n```',
        'Sure! ["Hi", 42]',
        'Choose one: ["Option A", "Option B"] and reply by Friday to get your discount',
        "[" * 100_000,  # json.loads gives up with a RecursionError
    ],
)
def test_json_with_no_texts_to_be_had_is_refused(answer: str) -> None:
    """Sent as one part, it would put JSON syntax before a customer."""
    with pytest.raises(InvalidText, match="JSON"):
        split_parts(answer)


def test_a_json_answer_is_read_from_itself_alone() -> None:
    """Whole JSON decides: a fence or a list inside one of its strings is text."""
    answer = '["Use ```[\\"SAVE10\\"]``` at checkout", "Reply STOP to opt out"]'
    assert split_parts(answer) == ['Use ```["SAVE10"]``` at checkout', "Reply STOP to opt out"]


def test_empty_answers_have_no_parts() -> None:
    assert split_parts("") == []
    assert split_parts("[]") == []
    assert split_parts('["", " ", "\\n"]') == []
    assert split_parts("```json\n```") == []


def test_a_long_part_is_cut_at_word_boundaries() -> None:
    words = [f"word{i:04d}" for i in range(400)]  # 9 characters each, 3,599 with spaces
    parts = split_parts(json.dumps(["short one", " ".join(words), "last"]))
    assert parts[0] == "short one" and parts[-1] == "last"
    middle = parts[1:-1]
    assert len(middle) == 4
    assert all(len(p) <= PART_LIMIT for p in middle)
    assert all(len(p) > PART_LIMIT - 10 for p in middle[:-1])  # each filled to the last word
    assert " ".join(middle).split(" ") == words  # no word cut, none lost, none repeated


def test_cuts_fall_on_any_whitespace_and_drop_it() -> None:
    text = "a" * 995 + "\n\n" + "b" * 10 + "\t" + "c" * 5
    assert fit(text) == ["a" * 995, "b" * 10 + "\t" + "c" * 5]
    exact = "x" * PART_LIMIT + " y"  # the space right after the limit is a boundary
    assert fit(exact) == ["x" * PART_LIMIT, "y"]


def test_a_part_of_exactly_the_limit_stays_whole() -> None:
    text = "é" * PART_LIMIT
    assert split_parts(json.dumps([text])) == [text]
    assert len(text.encode()) == 2 * PART_LIMIT  # characters are counted, not bytes


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    japanese = "今週末はセール中です" * 250  # 2,500 characters, no spaces
    parts = split_parts(json.dumps([japanese], ensure_ascii=False))
    assert [len(p) for p in parts] == [1000, 1000, 500]
    assert "".join(parts) == japanese


def test_a_hard_cut_keeps_marks_and_joined_emoji_whole() -> None:
    combining = "x" * 999 + "e\u0301" + "y" * 10  # e + combining acute at 999..1000
    parts = fit(combining)
    assert parts == ["x" * 999, "e\u0301" + "y" * 10]
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji of five code points
    text = "z" * 998 + family + "z" * 10  # the cut at 1000 falls inside it
    parts = fit(text)
    assert parts == ["z" * 998, family + "z" * 10]
    thumbs = "\U0001f44d\U0001f3fd"  # thumbs up, medium skin tone
    parts = fit("w" * 999 + thumbs)
    assert parts == ["w" * 999, thumbs]
    assert all(not unicodedata.category(p[0]).startswith("M") for p in parts)


def test_a_hard_cut_keeps_a_flag_whole_and_gives_up_past_half_a_part() -> None:
    flags = "\U0001f1e7\U0001f1f7" * 500  # Brazil 500 times: 1,000 regional indicators
    parts = fit("v" + flags)  # the cut at 1000 falls between a flag's two letters
    assert parts == ["v" + flags[:998], flags[998:]]
    marks = "a" + "\u0301" * 1500  # one letter with 1,500 marks: no place to cut well
    assert [len(p) for p in fit(marks)] == [PART_LIMIT, 501]


def test_what_shows_nothing_or_cannot_be_sent_is_dropped() -> None:
    assert split_parts("\u200b" * 12) == []
    assert split_parts('["\u200b\u200b", "kept part"]') == ["kept part"]
    assert split_parts('["\\ud83d hi there"]') == ["hi there"]  # a lone surrogate
    with pytest.raises(InvalidText, match="0 characters after trimming"):
        validate(["\u200b" * 12, "\u200d"])


def test_unicode_parts_come_through_unchanged() -> None:
    parts = ["Olá Ana! 🎉", "Größere Auswahl", "今週末はセール中です。", "שלום 👋🏽"]
    assert split_parts(json.dumps(parts, ensure_ascii=False)) == parts
    assert split_parts(json.dumps(parts)) == parts  # \\u escapes


def test_validate_wants_ten_characters() -> None:
    assert validate(["0123456789"]) == ["0123456789"]
    assert validate(["01234", "56789"]) == ["01234", "56789"]
    assert validate(["🎉" * MIN_TEXT]) == ["🎉" * MIN_TEXT]
    with pytest.raises(InvalidText, match=r"too short to send: 9 characters after trimming"):
        validate(["012345678"])
    with pytest.raises(
        InvalidText, match=rf"0 characters after trimming, at least {MIN_TEXT} needed"
    ):
        validate(split_parts('["  ", ""]'))
    with pytest.raises(InvalidText, match="too short"):
        validate(split_parts("  ok  \n"))


def test_part_keys_name_their_message() -> None:
    assert part_key(17, 0) == "17:0"
    assert message_of(part_key(17, 3)) == 17
    for foreign in ("17", "17:", ":0", "a:0", "17:0:1", "17:x", "\u0661\u0667:\u0660", ""):
        assert message_of(foreign) is None
