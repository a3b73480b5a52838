"""Signed URLs stay out of the access log: a logged signature is a working URL for anyone who reads the log.

uvicorn's access logger writes each request's path and query; `redact_signatures` adds a filter to it
that replaces the value of every `signature` (and S3-style `X-Amz-Signature`, `sig`) query parameter.
"""

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
REDACTED = "REDACTED"
_SIGNATURE = re.compile(r"([?&](?:signature|sig|x-amz-signature)=)[^&\s\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    return _SIGNATURE.sub(rf"\g<1>{REDACTED}", text)


class RedactSignatures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def redact_signatures(logger_name: str = ACCESS_LOGGER) -> None:
    """Install the filter once (called at every app start, after uvicorn has configured its loggers)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(existing, RedactSignatures) for existing in logger.filters):
        logger.addFilter(RedactSignatures())
