"""Validity checks of structured identifiers, so a pattern match is a strong signal: the Luhn
checksum of payment cards, IBANs (ISO 13616 country lengths, ISO 7064 mod-97) and the ranges
in which the SSA issues US Social Security numbers.

A pure algorithm: it knows no pipe. The ``pii_patterns`` pipe runs these on the digits of
its normalised view (ASCII digits, whatever script the text wrote them in).
"""
from typing import Dict

# ISO 13616 registry: IBAN length per country
IBAN_LENGTHS: Dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
# numbers known to be invalid although in valid ranges (advertising / Woolworth's wallet card)
_SSN_BLOCKLIST = {"078051120", "219099999", "123456789"}


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum (payment card numbers).

    digits (str): only the digits 0-9.
    RETURNS (bool): True when the checksum is 0 mod 10.
    """
    if not digits.isdigit():
        return False
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(code: str) -> bool:
    """Whether ``code`` (spaces allowed) is an IBAN: a known country, that country's
    length, alphanumeric, and ISO 7064 mod-97 == 1.

    code (str): e.g. "DE89 3704 0044 0532 0130 00".
    RETURNS (bool): True when valid.
    """
    compact = code.replace(" ", "").upper()
    if len(compact) < 5 or IBAN_LENGTHS.get(compact[:2]) != len(compact) or not (compact.isascii() and compact.isalnum()):
        return False
    if not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def us_ssn_valid(area: str, group: str, serial: str) -> bool:
    """Whether an SSN's parts are in ranges the SSA issues: area not 000, 666 or
    900-999; group not 00; serial not 0000; not a number known to be void."""
    if area in ("000", "666") or area.startswith("9") or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_BLOCKLIST
