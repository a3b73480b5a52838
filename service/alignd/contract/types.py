"""JSON scalar types for request bodies: a boolean is not a number, and a string is neither.

Pydantic's lax mode reads `true` as 1 and `"8"` as 8. Request fields use these strict types instead, so
such input gets a 400 naming the field (as the OpenAPI schema promises) rather than being silently
converted. `Number` still takes an integer (`"beta": 1` is a fine float).
"""

from typing import Annotated

from pydantic import Strict

Int = Annotated[int, Strict()]
Number = Annotated[float, Strict()]
Flag = Annotated[bool, Strict()]

MAX_STEP = 2**31 - 1
"""Steps are stored in 32-bit integer columns."""
MAX_TIMESTAMP = 2**40
"""Unix seconds (the year 36812): far past any real clock, well inside a 64-bit column."""
