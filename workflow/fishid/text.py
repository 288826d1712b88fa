"""Text from outside shown safely: what a terminal or a YAML comment must show, not obey."""

import unicodedata


def escape_text(text: str) -> str:
    """`text` with control and format characters and line and paragraph separators written as
    escapes (\\n, \\x1b, \\x85, \\u202e, \\u2028): fields from sources can hold anything, and a
    terminal must show them, not obey them (a newline forging an output line, an escape
    sequence rewriting the screen), nor may a name end a YAML comment and add a key."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(repr(ch)[1:-1] if ord(ch) < 0x80 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)
