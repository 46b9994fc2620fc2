"""Logging for every `steward` command: INFO lines on stderr, and no line carries a full phone number.

`configure_logging()` is what `steward …` runs first; `install_phone_mask(handler)` puts the mask on any other
handler (a test's, a log shipper's). The mask works on the record itself — the message merged with its args,
the exception text (every chained exception's message included) and the stack — so whatever fails, with
whatever in its message, reaches the handler as 138****5678 (`storage.text.mask_phones`, the rule replies use).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os

from storage.text import mask_phones  # the one rule: what a reply masks, a log line masks

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_EXCEPTION_FORMATTER = logging.Formatter()


class PhoneMaskFilter(logging.Filter):
    """A handler filter that masks phone numbers in the message, its args, the exception text and the stack.

    The args are merged into the message (and cleared) so that no handler formats the raw values again; a record
    whose args do not fit its format still has both masked (logging's own error report prints them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a format/args mismatch: keep both, masked, for logging's error report
            record.msg = mask_phones(str(record.msg))
            if record.args:
                record.args = _masked_args(record.args)
        else:
            record.msg, record.args = mask_phones(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_phones(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_phones(record.stack_info)
        return True


def _masked_args(args):
    if isinstance(args, dict):
        return {key: mask_phones(str(value)) for key, value in args.items()}
    return tuple(mask_phones(str(value)) for value in args)


def install_phone_mask(*handlers: logging.Handler) -> None:
    """Mask phone numbers in what these handlers (default: the root logger's) write; installing twice is a no-op."""
    for handler in handlers or tuple(logging.getLogger().handlers):
        if not any(isinstance(f, PhoneMaskFilter) for f in handler.filters):
            handler.addFilter(PhoneMaskFilter())


# The inbound message a line was written for (bot/gateway.py sets it per request; tasks inherit it).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("steward_request_id", default=None)


def new_request_id() -> str:
    """A fresh id for the message being handled in this context (and the tasks it starts)."""
    value = os.urandom(6).hex()  # the 12 hex characters a uuid4 gave, without the uuid's cost per message
    request_id.set(value)
    return value


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request id of the message it was written for (None outside one), at the
    moment it is logged: a handler that formats later, in another thread, still has it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """FORMAT, then ` request_id=…` when the line belongs to a message: one grep finds all of a message's lines."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        rid = getattr(record, "request_id", None)
        return f"{line} request_id={rid}" if rid else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line (STEWARD_LOG_FORMAT=json, for a log shipper): ts, level, logger, request_id,
    msg, exc. Masked again as a whole, so no field can carry a full phone number."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "request_id": getattr(record, "request_id", None), "msg": record.getMessage()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return mask_phones(json.dumps(entry, ensure_ascii=False))


def install_request_ids(*handlers: logging.Handler, json_lines: bool = False) -> None:
    """Put the request id on these handlers' lines (default: the root logger's), as text or JSON lines."""
    for handler in handlers or tuple(logging.getLogger().handlers):
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
        handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())


def configure_logging(level: int = logging.INFO) -> None:
    """The `steward` command's logging: INFO lines on stderr, phone numbers masked, chatty libraries quiet."""
    logging.basicConfig(level=level, format=FORMAT)
    # Alembic and APScheduler narrate every migration step and every job tick at INFO: an operator's
    # terminal (and a start-up error, which must stay one sentence) is not the place for that.
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    install_phone_mask()
    install_request_ids()
