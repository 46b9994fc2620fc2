"""No log line carries a full phone number, whatever fails: the message, its args, the exception and its causes."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.logging_setup import FORMAT, PhoneMaskFilter, install_phone_mask, mask_phones

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("text", "masked"), [
    ("13812345678", "138****5678"),
    ("居民 13912345678 绑定失败", "居民 139****5678 绑定失败"),
    ("tel:19912345678,", "tel:199****5678,"),
    ("+86 138 1234 5678", "+86 138****5678"),
    ("8613812345678", "86138****5678"),
    ("a=13812345678&b=15000000001", "a=138****5678&b=150****0001"),
    ("1700000000000", "1700000000000"),  # a 13-digit timestamp is not a phone
    ("msg 213812345678", "msg 213812345678"),  # part of a longer digit run
    ("12812345678", "12812345678"),  # 12x is not a mobile prefix
    ("138****5678", "138****5678"),  # masking twice changes nothing
])
def test_mobile_numbers_are_masked_and_other_digit_runs_are_not(text, masked):
    assert mask_phones(text) == masked


def capture() -> tuple[logging.Logger, io.StringIO]:
    """A logger writing through a masked handler with the command's format, as `steward` configures it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(FORMAT))
    install_phone_mask(handler)
    install_phone_mask(handler)  # twice is once
    assert sum(isinstance(f, PhoneMaskFilter) for f in handler.filters) == 1
    logger = logging.getLogger(f"steward.test.{id(out)}")
    logger.propagate = False
    logger.addHandler(handler)
    return logger, out


def test_an_exception_and_its_cause_with_a_phone_are_masked_in_the_logged_traceback():
    logger, out = capture()
    try:
        try:
            raise ValueError("duplicate key (phone)=(13812345678)")
        except ValueError as exc:
            raise RuntimeError("绑定 13912345678 失败") from exc
    except RuntimeError:
        logger.exception("binding failed for %s", "15012345678")
    text = out.getvalue()
    assert "Traceback" in text and "RuntimeError" in text  # the traceback is still there
    assert "138****5678" in text and "139****5678" in text and "150****5678" in text
    for phone in ("13812345678", "13912345678", "15012345678"):
        assert phone not in text


def test_a_phone_in_args_of_any_shape_is_masked(capsys):
    logger, out = capture()
    record = {"name": "张三", "phone": "13812345678"}
    logger.warning("resident record %s", record)
    logger.warning("contact %(phone)s", {"phone": "13712345678"})
    text = out.getvalue()
    assert "resident record {'name': '张三', 'phone': '138****5678'}" in text and "contact 137****5678" in text
    for phone in ("13812345678", "13712345678"):
        assert phone not in text

    phone = "136" + "12345678"  # (logging's report quotes this source line)
    logger.warning("bad format %d", phone)  # args that do not fit: logging reports them on stderr
    report = capsys.readouterr().err
    assert "--- Logging error ---" in report and "136****5678" in report and "13612345678" not in report


def test_the_steward_command_masks_phones_on_its_own_stderr(tmp_path):
    # Runs `steward` (bot.cli.main) with a stand-in command that fails the way a handler might.
    script = """
import argparse, logging
from bot import cli

def failing(args):
    log = logging.getLogger("steward.engine")
    try:
        raise LookupError("no resident with phone 13812345678")
    except LookupError:
        log.exception("handler failed for %s", {"openid": "o_x", "phone": "13912345678"})
    log.warning("retrying %s", "+86 150 1234 5678")

parser = argparse.ArgumentParser()
parser.set_defaults(func=failing)
cli.build_parser = lambda: parser
cli.main([])
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEWARD_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "ERROR steward.engine: handler failed for" in err and "LookupError" in err
    assert "138****5678" in err and "139****5678" in err and "150****5678" in err
    for phone in ("13812345678", "13912345678", "150 1234 5678"):
        assert phone not in err
