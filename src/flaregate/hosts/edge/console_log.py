"""Log records to the runtime's console, one bare JSON object per call, by level.

Python's stderr reaches workerd as ``console.error``: every line, info access logs
included, would be an error in wrangler and in Workers Logs. Workers Logs parses one JSON
object per ``console.log`` / ``console.info`` / ``console.warn`` / ``console.error``
call, so each record goes to the method of its level.
"""

from __future__ import annotations

import logging

import js


class ConsoleHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            console = js.console
            if record.levelno >= logging.ERROR:
                console.error(line)
            elif record.levelno >= logging.WARNING:
                console.warn(line)
            elif record.levelno >= logging.INFO:
                console.info(line)
            else:
                console.debug(line)
        except Exception:
            self.handleError(record)
