"""Checks of the project's documentation (README.md and docs/*.md), standard library only:

- every relative link resolves: to a file or folder of the repository, and its #anchor (if
  any) to a heading of the target Markdown file (GitHub's anchor rules);
- every contract section cited anywhere ("contract §n", "docs/contract.md §n") is a section
  of docs/contract.md, and a file citing "contract §n" names docs/contract.md at least once;
- nothing cites the product contract's file outside the repository (its name is OLD_NAME
  below), with or without a section;
- README.md stays a front page: at most README_MAX_LINES lines.

Run from tests/compose: /usr/bin/python3 -m unittest discover -s . -p 'test_*.py'
"""

import os
import re
import subprocess
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
README_MAX_LINES = 220
# The name of the product contract's file, not in the repository (spelt in two pieces so that
# this file does not cite it), and the files still citing it: rewritten on another branch
# (issue 11, item 1), which takes the change.
OLD_NAME = "SP" + "EC"

LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SECTION_REF = re.compile(r"contract(?:\.md)?\s+§\s*(\d+)(?:\s*[-–/]\s*§\s*(\d+))?")
OLD_REF = re.compile(r"\b" + OLD_NAME + r"(?:\s+§|\.md\b)")


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def doc_files():
    docs = sorted("docs/" + n for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md"))
    return ["README.md"] + docs


def tracked_files():
    """The repository's files: git's list when available, else a walk (build/ and .git/ left out)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        files = [f for f in out.splitlines() if os.path.isfile(os.path.join(ROOT, f))]
        if files:
            return files
    except (OSError, subprocess.CalledProcessError):
        pass
    files = []
    for d, dirs, names in os.walk(ROOT):
        dirs[:] = [x for x in dirs if x not in (".git", "build", "__pycache__")]
        files += [os.path.relpath(os.path.join(d, n), ROOT) for n in names]
    return files


def strip_code(text):
    """Markdown without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(text):
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-';
    a repeated anchor gets -1, -2, …"""
    seen, out = {}, set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.sub(r"^```.*?^```", "", text,
                                                          flags=re.S | re.M), re.M):
        a = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(a, 0)
        seen[a] = n + 1
        out.add(a if n == 0 else "%s-%d" % (a, n))
    return out


def contract_sections():
    return {int(m.group(1)) for m in re.finditer(r"^## (\d+)\. ", read("docs/contract.md"), re.M)}


class Docs(unittest.TestCase):
    def test_relative_links_resolve(self):
        broken = []
        n = 0
        for rel in doc_files():
            base = os.path.dirname(rel)
            for m in LINK.finditer(strip_code(read(rel))):
                target = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                    continue  # http:, https:, mailto:
                n += 1
                path, _, anchor = target.partition("#")
                dest = os.path.normpath(os.path.join(base, path)) if path else rel
                full = os.path.join(ROOT, dest)
                if not os.path.exists(full):
                    broken.append("%s: %s (no such file %s)" % (rel, target, dest))
                    continue
                if anchor:
                    if not dest.endswith(".md") or os.path.isdir(full):
                        broken.append("%s: %s (anchor into a non-Markdown target)" % (rel, target))
                    elif anchor not in anchors(read(dest)):
                        broken.append("%s: %s (no heading #%s in %s)" % (rel, target, anchor, dest))
        self.assertEqual(broken, [], "broken relative links")
        self.assertGreater(n, 10, "too few links found: is the link pattern still right?")
        print("\n  %d relative links in %d pages resolve" % (n, len(doc_files())), end=" ")

    def test_contract_references_resolve(self):
        sections = contract_sections()
        self.assertEqual(sections, set(range(1, 9)), "docs/contract.md must keep sections 1-8")
        bad, unnamed = [], []
        for rel in tracked_files():
            if rel.startswith("tests/bench/results/"):
                continue
            try:
                text = read(rel)
            except (UnicodeDecodeError, IsADirectoryError):
                continue
            refs = list(SECTION_REF.finditer(text))
            for m in refs:
                for g in m.groups():
                    if g and int(g) not in sections:
                        line = text.count("\n", 0, m.start()) + 1
                        bad.append("%s:%d: %s" % (rel, line, m.group(0)))
            if refs and rel != "docs/contract.md" and "docs/contract.md" not in text \
                    and not rel.startswith("docs/") and rel != "README.md":
                unnamed.append(rel)
        self.assertEqual(bad, [], "contract sections that do not exist")
        self.assertEqual(unnamed, [], "files citing 'contract §n' without naming docs/contract.md")

    def test_no_references_outside_the_repository(self):
        found = []
        for rel in tracked_files():
            try:
                text = read(rel)
            except (UnicodeDecodeError, IsADirectoryError):
                continue
            for m in OLD_REF.finditer(text):
                found.append("%s:%d" % (rel, text.count("\n", 0, m.start()) + 1))
        self.assertEqual(found, [], OLD_NAME + " is not in the repository: cite docs/contract.md §n")

    def test_readme_is_a_front_page(self):
        lines = read("README.md").count("\n")
        self.assertLessEqual(lines, README_MAX_LINES,
                             "README.md has %d lines; move detail into docs/" % lines)
        for cmd in ("make run", "make test"):
            self.assertIn(cmd, read("README.md"))
        print("\n  README.md: %d lines" % lines, end=" ")


if __name__ == "__main__":
    unittest.main()
