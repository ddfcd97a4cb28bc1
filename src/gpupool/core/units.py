"""Token amounts as people and seed clients write them, and the integer micro-units the hub keeps.

SPEC §7: a field named in tokens (``price_token_per_ksec``, ``max_price``, a candidate's ``price``)
takes a JSON number or a decimal string and is converted exactly; more than six decimals cannot be
held in micro-units and is refused, never rounded. A JSON number arrives as a binary float, so it is
read back through its shortest repr (``0.8`` stays ``0.8``), which is the decimal the client wrote.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from gpupool.errors import InvalidInput

MICRO_PER_TOKEN = 1_000_000
MAX_MICRO = 10**15  # a billion tokens: far above any price, far below int64
_DECIMAL = re.compile(r"^\d{1,16}(\.\d{1,32})?$")


def micro_from_tokens(value: object, *, field: str, max_micro: int = MAX_MICRO) -> int:
    """Tokens (int, float or decimal string, >= 0) → micro-units, exactly; else ``InvalidInput``."""
    amount = _decimal(value, field)
    micro = amount * MICRO_PER_TOKEN
    if micro != micro.to_integral_value():
        raise InvalidInput(f"{field}: at most 6 decimals (1 micro-unit = 0.000001 token)", field=field)
    if not 0 <= micro <= max_micro:
        raise InvalidInput(f"{field}: between 0 and {max_micro // MICRO_PER_TOKEN} tokens", field=field)
    return int(micro)


def tokens_from_micro(micro: int) -> float:
    """Micro-units → tokens as a JSON number; exact to the six decimals a micro-unit has."""
    return micro / MICRO_PER_TOKEN


def _decimal(value: object, field: str) -> Decimal:
    if isinstance(value, bool):
        raise InvalidInput(f"{field}: a number of tokens, not a boolean", field=field)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{field}: a finite number of tokens", field=field)
        return Decimal(repr(value))
    if isinstance(value, str) and _DECIMAL.match(value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
            pass
    raise InvalidInput(f'{field}: tokens as a number or a decimal string such as "0.75"', field=field)
