"""Which Python argument of a pgcoord call does not fit the call's annotation, asked only
after the server refused the call with a type error (an `int` where the function takes an
interval reaches the server as smallint, and PostgreSQL answers that no function
matches) or found no pgcoord function, view or schema to run. Nothing here runs while
calls succeed.

The call is found on the stack: the nearest frame of a function of a call module (the
`locks`, `inbox`, `campaigns` and `rates` modules and their async originals), whose
arguments are read from the frame and compared with the function's annotations (read
once per function).
"""

from __future__ import annotations

import functools
import inspect
import reprlib
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

# the SQLSTATEs after which the arguments are checked: a value of a type the function
# does not take (undefined_function: no function takes these argument types;
# datatype_mismatch; invalid_text_representation, invalid_datetime_format,
# datetime_field_overflow: a text that does not read as the argument's type), and a
# missing view or schema (undefined_table, invalid_schema_name), so that a mistyped call
# is reported as such whatever is installed
CHECKED_SQLSTATES = frozenset({"42883", "42804", "22P02", "22007", "22008", "42P01", "3F000"})

CALL_MODULES = frozenset(
    f"{__package__}.{name}{suffix}"
    for name in ("locks", "inbox", "campaigns", "rates")
    for suffix in ("", "_async")
)

_shown = reprlib.Repr()
_shown.maxstring = 60
_shown.maxother = 60


def mistyped() -> TypeError | None:
    """The TypeError naming the first argument of the pgcoord call on the stack (the
    nearest public function of a call module) whose value does not fit its annotation;
    None when there is no such call or every value fits."""
    frame = sys._getframe(1)
    while frame is not None and (
        frame.f_globals.get("__name__") not in CALL_MODULES or frame.f_code.co_name[:1] == "_"
    ):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    call = frame.f_globals.get(frame.f_code.co_name)
    if getattr(call, "__code__", None) is not frame.f_code:
        return None
    values = frame.f_locals
    for name, hint in _hints(call).items():
        if name in values and not fits(values[name], hint):
            return _wrong(f"{frame.f_code.co_name}: {name}", hint, values[name])
    return None


def check(name: str, value: Any, hint: Any) -> None:
    """Raise the TypeError of a mistyped call when `value` does not fit `hint`, for what
    the driver uses before any call is made (a lease's ttl, a worker's intervals).
    `name` is what the message names: "lock: ttl", "grace"."""
    if not fits(value, hint):
        raise _wrong(name, hint, value)


def _wrong(name: str, hint: Any, value: Any) -> TypeError:
    return TypeError(
        f"{name} must be {describe(hint)}, got {type(value).__name__} {_shown.repr(value)}"
    )


def retyped(exc: Exception) -> Exception:
    """`exc`, raised while a pgcoord call turned its arguments into parameters (a list of
    an int, a dict of a text), as the TypeError naming the argument that does not fit
    its annotation; `exc` itself when every argument fits."""
    return mistyped() or exc


@functools.cache
def _hints(call: Callable[..., Any]) -> dict[str, Any]:
    """The annotations of the call's parameters after the connection, by name."""
    hints = typing.get_type_hints(call)
    _, *parameters = inspect.signature(call).parameters
    return {name: hints[name] for name in parameters if name in hints}


def fits(value: Any, hint: Any) -> bool:
    """Whether `value` is of the annotated type (the elements of a list, tuple or text
    too; a bool is no int, an int is a float)."""
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(fits(value, arg) for arg in typing.get_args(hint))
    if origin is None:
        if hint is float:
            return isinstance(value, int | float) and not isinstance(value, bool)
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, hint)
    if not isinstance(value, origin):
        return False
    args = typing.get_args(hint)
    # a text is a sequence too: of texts, which is what its elements are checked against
    if args and isinstance(value, list | tuple | str) and not issubclass(origin, Mapping):
        return all(fits(element, args[0]) for element in value)
    return True


def describe(hint: Any) -> str:
    """The annotated type in words: "a timedelta", "a Sequence of timedelta or None"."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(hint)
        named = [describe(arg) for arg in args if arg is not type(None)]
        return " or ".join(named + (["None"] if type(None) in args else []))
    if origin is None:
        return _article(getattr(hint, "__name__", str(hint)))
    name = _article(origin.__name__)
    args = typing.get_args(hint)
    if args and not issubclass(origin, Mapping) and args[0] is not Any:
        return f"{name} of {getattr(args[0], '__name__', str(args[0]))}"
    return name


def _article(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
