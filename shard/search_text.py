"""The text of search documents: tokenizing, walking packed values in steps, snippets.

Tokens are the lowercased Unicode words of a text (`\\w+`, `tokenize`). A
document's text is its strs, and the strs inside packed values (dict keys
and bytes are not text: `packed_text` decodes a short value whole).

A long document is never decoded or tokenized whole (`shard.search_docs`
indexes it in steps): `packed_pieces` walks a packed value of any size a
bounded piece at a time, decoding about STEP_CHARS bytes of str per piece,
and `segments` cuts the text into segments of about STEP_CHARS characters,
one a step. A segment ends just after a space or a punctuation mark that also
ends a word for `str.lower` (`SEPARATORS`: neither a word character nor cased
nor case-ignorable, so Greek final sigma lowercases as it does in the whole
text), so the segments' tokens are those of the text taken whole; a stretch
of more than MAX_CARRY characters with no such mark is the one exception
(cut there).

A snippet is cut from the first SNIPPET_SCAN characters of a document's text
(its start when the words matched lie beyond), found by one regex rather
than a Python loop over every word.
"""

from __future__ import annotations

import re

import msgpack

#: what one step of a long document decodes and tokenizes, in characters (bytes of
#: packed str): ~16 KiB of words take ~1-2 ms to index, so a step stays well below
STEP_CHARS = 4 * 1024
#: text is cut between steps only after a SEPARATOR; a stretch longer than this
#: without one (a "word" of a megabyte) is cut anyway
MAX_CARRY = 48 * 1024
#: packed elements a long document's decoding walks between two looks at the clock
WALK_TICK = 4096
#: a snippet's length, in characters
SNIPPET_CHARS = 80
#: a snippet is looked for in this much of a document's text, no more
SNIPPET_SCAN = 256 * 1024
#: a packed value of at most this many bytes is decoded whole for its snippet
SNIPPET_WHOLE = 16 * 1024

#: the word pattern (`tokenize`, and the indexing of a document)
WORD = re.compile(r"\w+")
_unpackb = msgpack.unpackb


def _breaks_words_and_case(c: str) -> bool:
    # Not a word character (no token spans it) and neither cased nor case-ignorable
    # (Unicode's Final_Sigma context stops at it): text cut after it lowercases and
    # tokenizes as it does whole.
    return not WORD.match(c) and ("a\u03a3" + c + "a").lower()[1] == "\u03c2"


#: where the text of a long document may be cut between two steps, most common first
SEPARATORS = "".join(c for c in " \n\t\r\x0b\x0c\u3000\u3002\uff0c\u3001,;!?()[]{}<>\"/\\|=+*&%#@~^"
                     if _breaks_words_and_case(c))


def tokenize(text: str) -> list[str]:
    """The tokens of `text`: its lowercased words, in order."""
    return WORD.findall(text.lower())


def _strings(value, out: list) -> list:
    t = type(value)
    if t is str:
        out.append(value)
    elif t is list:
        for v in value:
            _strings(v, out)
    elif t is dict:
        for v in value.values():
            _strings(v, out)
    return out


# msgpack first bytes that can hold text: 0x80-0x9f fixmap/fixarray, 0xa0-0xbf
# fixstr, 0xd9-0xdb str, 0xdc-0xdf array/map. Everything else is a number,
# bytes, bool or nil, and is skipped without decoding.
TEXTISH = bytes(1 if 0x80 <= b <= 0xbf or 0xd9 <= b <= 0xdf else 0 for b in range(256))


def packed_text(data) -> list:
    """Strings inside a packed value."""
    if not data or not TEXTISH[data[0]]:
        return []
    return _strings(_unpackb(data, raw=False), [])


def _last_cut(s: str) -> int:
    """Where `s` may be cut (just after this index), or -1: the last SEPARATOR in it."""
    for c in SEPARATORS:
        i = s.rfind(c)
        if i >= 0:
            return i
    return -1


_LAST_NONWORD = re.compile(r"\W(?=\w*\Z)")


def segments(sources):
    """The text of `sources` in segments of about STEP_CHARS characters, one per step.

    Tokenized one by one they give the tokens of the texts joined by spaces
    (what a short document's indexing tokenizes): each is cut just after a
    SEPARATOR, or at a text's end. A stretch of MAX_CARRY characters without a
    separator is cut after its last non-word character, or, a single word that
    long, anywhere. An empty segment is a step of decoding that met no text.
    """
    batch: list = []
    size = 0
    for src in sources:
        carry = ""
        for piece, end in (_str_pieces(src) if type(src) is str else packed_pieces(src)):
            if piece is None:
                yield ""
                continue
            text = carry + piece if carry else piece
            carry = ""
            if not end:
                cut = _last_cut(text)
                if cut < 0:
                    if len(text) < MAX_CARRY:
                        carry = text
                        continue
                    m = _LAST_NONWORD.search(text)
                    cut = m.start() if m else len(text) - 1
                carry = text[cut + 1:]
                text = text[:cut + 1]
            batch.append(text)
            size += len(text)
            if size >= STEP_CHARS:
                yield " ".join(batch)
                batch = []
                size = 0
    if batch:
        yield " ".join(batch)


def _str_pieces(text: str):
    n = len(text)
    if n <= STEP_CHARS:
        yield text, True
        return
    for i in range(0, n, STEP_CHARS):
        yield text[i:i + STEP_CHARS], i + STEP_CHARS >= n


#: packed elements of a fixed size: first byte -> bytes
_FIXED = {0xc0: 1, 0xc2: 1, 0xc3: 1, 0xca: 5, 0xcb: 9, 0xcc: 2, 0xcd: 3, 0xce: 5, 0xcf: 9,
          0xd0: 2, 0xd1: 3, 0xd2: 5, 0xd3: 9, 0xd4: 3, 0xd5: 4, 0xd6: 6, 0xd7: 10, 0xd8: 18}
#: first byte -> (bytes of the big-endian length field, bytes after it before the data)
_SIZED = {0xd9: (1, 0), 0xda: (2, 0), 0xdb: (4, 0),       # str
          0xc4: (1, 0), 0xc5: (2, 0), 0xc6: (4, 0),       # bin
          0xc7: (1, 1), 0xc8: (2, 1), 0xc9: (4, 1)}       # ext
#: first byte -> (bytes of the big-endian count field, elements per count)
_CONTAINERS = {0xdc: (2, 1), 0xdd: (4, 1), 0xde: (2, 2), 0xdf: (4, 2)}


def packed_pieces(data):
    """(piece, end) for each str inside packed `data`, in the order `packed_text` gives them.

    Dict keys are left out. A str is decoded STEP_CHARS bytes at a time (cut at
    a character's first byte), `end` on its last piece; every WALK_TICK
    elements, (None, False): a step's worth of walking. Nothing is decoded in
    one go, so a value of any size costs a bounded step at a time.
    """
    if not data or not TEXTISH[data[0]]:
        return
    view = memoryview(data)
    n_data = len(data)
    pos = 0
    # each level: [elements left, is a map (keys and values alternate), skipped]
    stack = [[1, False, False]]
    walked = 0
    while stack:
        top = stack[-1]
        if not top[0]:
            stack.pop()
            continue
        skip = top[2] or (top[1] and not top[0] & 1)  # a map's key: 2n, 2n-2, ... left
        top[0] -= 1
        if pos >= n_data:
            return
        walked += 1
        if walked == WALK_TICK:
            walked = 0
            yield None, False
        b = data[pos]
        if b <= 0x7f or b >= 0xe0:
            pos += 1
        elif b <= 0x9f:
            pos += 1
            if b <= 0x8f:
                stack.append([2 * (b & 0x0f), True, skip])
            else:
                stack.append([b & 0x0f, False, skip])
        elif b <= 0xbf or b in _SIZED:
            if b <= 0xbf:
                n, start = b & 0x1f, pos + 1
            else:
                width, extra = _SIZED[b]
                if pos + 1 + width > n_data:
                    return
                n = int.from_bytes(data[pos + 1:pos + 1 + width], "big")
                start = pos + 1 + width + extra
            end = start + n
            if end > n_data:
                return
            pos = end
            if skip or not (b <= 0xbf or b <= 0xdb and b >= 0xd9):
                continue
            off = start
            while True:
                cut = min(off + STEP_CHARS, end)
                while cut < end and data[cut] & 0xc0 == 0x80:
                    cut -= 1  # back to a character's first byte
                if cut <= off < end:  # one character longer than a step: take it whole
                    cut = off + 1
                    while cut < end and data[cut] & 0xc0 == 0x80:
                        cut += 1
                yield str(view[off:cut], "utf-8", "replace"), cut >= end
                if cut >= end:
                    break
                off = cut
        elif b in _CONTAINERS:
            width, per = _CONTAINERS[b]
            if pos + 1 + width > n_data:
                return
            stack.append([per * int.from_bytes(data[pos + 1:pos + 1 + width], "big"), per == 2,
                          skip])
            pos += 1 + width
        elif b in _FIXED:
            pos += _FIXED[b]
        else:  # 0xc1 is never used: not a value this index can read
            return


def snippet_texts(sources) -> list[str]:
    """The texts of a document's `sources` (strs, packed values) as far as a snippet looks.

    The first SNIPPET_SCAN characters: a long document is never decoded whole
    for its snippet.
    """
    texts: list = []
    left = SNIPPET_SCAN
    for src in sources:
        if type(src) is not str and len(src) <= SNIPPET_WHOLE:  # short: decoded in one go
            for text in packed_text(src):
                texts.append(text)
                left -= len(text)
            if left <= 0:
                return texts
            continue
        pieces: list = []
        for piece, end in (_str_pieces(src) if type(src) is str else packed_pieces(src)):
            if piece is None:
                continue
            pieces.append(piece)
            left -= len(piece)
            if end or left <= 0:
                texts.append("".join(pieces))
                pieces = []
                if left <= 0:
                    return texts
    return texts


def snippet(texts: list, terms) -> str:
    """A short piece of the document's text around its first matching word."""
    wanted = set(terms)
    # The words as one pattern, longest first, whole words only: the regex engine
    # finds the first, where a Python loop over every word took a millisecond per 10 KiB.
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, sorted(wanted, key=len, reverse=True)))
                         + r")(?!\w)") if wanted else None
    for text in texts:
        at = None
        low = text.lower()
        if pattern is not None and len(low) == len(text):  # positions in both agree
            m = pattern.search(low)
            if m is not None:
                at = m.start()
        else:
            for m in WORD.finditer(text):
                if m.group().lower() in wanted:
                    at = m.start()
                    break
        if at is not None:
            start = max(at - SNIPPET_CHARS // 3, 0)
            piece = text[start:start + SNIPPET_CHARS]
            return ("…" if start else "") + piece + ("…" if start + SNIPPET_CHARS < len(text) else "")
    return (texts[0][:SNIPPET_CHARS] if texts else "")

