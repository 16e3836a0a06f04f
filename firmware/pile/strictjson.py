"""Strict JSON (RFC 8259) for the platform's downlinks: strict(b) says what is wrong with a
text, or None when it is exactly one JSON text.

MicroPython's json.loads also takes missing commas and colons, trailing commas, leading
zeros, bytes after the document and lone surrogates: pile.protocol runs this scan first,
so such a text is refused as bad input before json.loads sees it.  One pass over the
bytes, allocating only a small stack of open containers (DEPTH deep at most).
"""
from micropython import const

DEPTH = const(16)           # the deepest nesting a downlink may have
# `want` is what may come next: a value (_VAL), a key or "}" (_KEY1), a key (_KEY), ":"
# (_COLON), "," or the end of the container (_NEXT), a value or "]" (_VAL1).
_VAL = const(0)
_KEY1 = const(1)
_KEY = const(2)
_COLON = const(3)
_NEXT = const(4)
_VAL1 = const(5)


def strict(b):
    """None when b (bytes or str) is exactly one RFC 8259 JSON text, else what is wrong."""
    b = memoryview(b)
    n, i, want = len(b), 0, _VAL
    stack, d = bytearray(DEPTH), 0     # the open containers: 123 "{" or 91 "["
    while True:
        while i < n and (b[i] == 32 or b[i] == 10 or b[i] == 13 or b[i] == 9):
            i += 1
        if i == n:
            return None if want == _NEXT and not d else "ends early"
        c = b[i]
        if want == _NEXT:
            if not d:
                return "bytes after the document at %d" % i
            if c == 44:                                         # ,
                want = _KEY if stack[d - 1] == 123 else _VAL
            elif c == stack[d - 1] + 2:                         # } or ]
                d -= 1
            else:
                return "',' or end of container expected at %d" % i
            i += 1
            continue
        if want == _COLON:
            if c != 58:
                return "':' expected at %d" % i
            want, i = _VAL, i + 1
            continue
        if want == _KEY1 and c == 125 or want == _VAL1 and c == 93:
            want, i, d = _NEXT, i + 1, d - 1
            continue
        if want == _KEY1 or want == _KEY:
            if c != 34:
                return "key expected at %d" % i
            want = _COLON
        elif c == 123 or c == 91:                               # { [
            if d == DEPTH:
                return "nested deeper than %d" % DEPTH
            stack[d] = c
            want, i, d = (_KEY1 if c == 123 else _VAL1), i + 1, d + 1
            continue
        else:
            want = _NEXT
        if c == 34:
            i = _string(b, i + 1, n)
        elif c == 116 or c == 102 or c == 110:                  # true false null
            word = b"true" if c == 116 else b"false" if c == 102 else b"null"
            i = i + len(word) if bytes(b[i:i + len(word)]) == word else ~i
        else:
            i = _number(b, i, n)
        if i < 0:
            return "bad value at %d" % ~i


def _string(b, i, n):
    """Index after the string whose text starts at i, or ~i (negative) where it goes wrong."""
    low = False                 # a \u high surrogate must come next
    while i < n:
        c = b[i]
        if low and c != 92:
            return ~i
        if c == 34:
            return i + 1
        if c < 32:
            return ~i
        if c >= 128:                                        # UTF-8: RFC 3629 ranges
            k = 1 if 0xC2 <= c <= 0xDF else 2 if 0xE0 <= c <= 0xEF else \
                3 if 0xF0 <= c <= 0xF4 else 0
            lo = 0xA0 if c == 0xE0 else 0x90 if c == 0xF0 else 0x80
            hi = 0x9F if c == 0xED else 0x8F if c == 0xF4 else 0xBF     # no surrogates
            if not k or i + k >= n or not lo <= b[i + 1] <= hi:
                return ~i
            for j in range(i + 2, i + k + 1):
                if not 0x80 <= b[j] <= 0xBF:
                    return ~i
            i += k
        if c == 92:
            i += 1
            if i == n:
                return ~i
            c = b[i]
            if c == 117:                                    # \uXXXX
                h = bytes(b[i + 1:i + 5])
                if len(h) < 4 or [x for x in h if x not in b"0123456789abcdefABCDEF"]:
                    return ~i
                u = int(h, 16)
                is_low = 0xDC00 <= u <= 0xDFFF
                if is_low != low:
                    return ~i
                low = 0xD800 <= u <= 0xDBFF
                i += 4
            elif low or c not in b'"\\/bfnrt':
                return ~i
        i += 1
    return ~i


def _number(b, i, n):
    """Index after the number at i, or ~i (negative) where it is not one."""
    start = i
    if b[i] == 45:                                          # -
        i += 1
    if i < n and b[i] == 48:                                # 0: no digits may follow
        i += 1
    else:
        j = i
        while i < n and 48 <= b[i] <= 57:
            i += 1
        if i == j:
            return ~start
    for lead, signed in ((46, False), (101, True)):         # . fraction, e exponent
        if i < n and (b[i] == lead or signed and b[i] == 69):
            i += 1
            if signed and i < n and (b[i] == 43 or b[i] == 45):
                i += 1
            j = i
            while i < n and 48 <= b[i] <= 57:
                i += 1
            if i == j:
                return ~start
    return i
