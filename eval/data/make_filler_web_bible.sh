#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Rebuilds eval/data/filler-web-bible.txt from Debian 12's packages: the World English Bible
# (sword-text-web, public domain) read with diatheke. Genesis through Esther, one paragraph per
# chapter, markup and verse numbers removed, typographic quotes and dashes as ASCII. Needs root
# for apt-get; writes to the path given (default: the file beside this script).
set -euo pipefail
out=${1:-$(cd "$(dirname "$0")" && pwd)/filler-web-bible.txt}
apt-get install -y --no-install-recommends diatheke sword-text-web >/dev/null
diatheke -b engWEB2015eb -f OSIS -k "Genesis 1:1-Esther 10:3" | python3 -c '
import re, sys
chapters, last = [], None
for line in sys.stdin:
    m = re.match(r"^(.+?) (\d+):(\d+): (.*)$", line.rstrip("\n"))
    if not m:
        continue
    book, ch, _, text = m.groups()
    text = text.replace("</w><w>", "</w> <w>")
    text = re.sub(r"<note[^>]*>.*?</note>", "", text)
    text = re.sub(r"<title[^>]*>.*?</title>", "", text)
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub("([\u201c\u2018(]) ", r"\1", text)
    text = re.sub(" ([,.;:?!\u2019\u201d)])", r"\1", text)
    for a, b in (("\u2019", "\x27"), ("\u2018", "\x27"), ("\u201c", "\""), ("\u201d", "\""),
                 ("\u2014", " - "), ("\u2013", "-")):
        text = text.replace(a, b)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r" ([,.;:?!\x27)])", r"\1", text)
    if not text:
        continue
    if not chapters or chapters[-1][:2] != (book, ch):
        chapters.append((book, ch, []))
    chapters[-1][2].append(text)
out = []
for book, ch, verses in chapters:
    if book != last:
        out.append("THE BOOK OF " + book.upper())
        last = book
    out.append(" ".join(verses))
sys.stdout.write("\n\n".join(out) + "\n")
' >"$out"
echo "wrote $out ($(wc -c <"$out") bytes)"
