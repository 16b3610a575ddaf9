"""The ``keyword`` labeler: a fast word-list heuristic for smoke tests and pre-filtering.

**Not a safety classifier.** It flags a segment when it contains one of a few hundred phrases per Qwen3Guard
category (``pipe bomb``, ``launder money``, a social security number ...). It misses anything phrased
differently and flags quoted, historical or fictional uses. Use it to exercise the pipeline, to estimate
how much a real classifier will flag, or to pick documents for one; label training data with ``openai``
(Qwen3Guard / Llama Guard) or ``hf-classifier``.

Context: phrases are matched over the whole document, and a match counts for the segment in which it
*ends*, so a phrase that straddles a segment boundary is caught with the preceding context.
``follow_segments`` optionally marks the segments right after an unsafe one as controversial
(instructions tend to continue).

Phrase syntax (built-in lists and ``patterns_file``): words separated by spaces; a word is one or more
``|``-separated lower-case ASCII alternatives (``kill|killing``); a trailing ``?`` makes a word optional
(not the first). Words match case-insensitively, separated by any run of non-alphanumeric ASCII
characters. ``*_regex`` entries are raw regexes for number formats, matched against the text's *shape*:
ASCII lower-cased and every digit replaced by ``0`` (so ``000-00-0000`` is a social security number); begin
them with a literal so the scan stays fast.

Speed: a document is lower-cased and split into words once (C-level ``bytes`` operations); only phrases whose
first word occurs are tried, each from the positions of that word; >= 20 MB/s of text per core
(``bench/bench_label.py``).
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import Label, SegmentLabel
from srp_megatron.prep.label.labelers.base import LABELERS, Labeler, SegmentedDocument
from srp_megatron.prep.label.labelers.guard_formats import QWEN3GUARD_CATEGORIES

_V, _ILL, _SEX, _PII, _SUI, _UNETH, _POL, _COPY, _JAIL = QWEN3GUARD_CATEGORIES
_PEOPLE = (
    "neighbour|neighbor|neighbours|neighbors|wife|husband|child|children|kids|boss|family|teacher|classmates|coworker"
)
_DRUGS = "meth|methamphetamine|fentanyl|heroin|cocaine|crack|lsd|mdma"

#: category -> severity list -> entries. Keys: ``unsafe``, ``controversial`` (phrases), ``unsafe_regex``,
#: ``controversial_regex`` (regexes over the text's shape, see the module doc).
BUILTIN_KEYWORDS: dict[str, dict[str, list[str]]] = {
    _V: {
        "unsafe": [
            "pipe bomb|bombs",
            "build|building|make|making|assemble|assembling a|an? homemade? bomb|bombs|explosive|explosives|grenade",
            f"kill|killing|murder|murdering|stab|stabbing|strangle|poison|poisoning a|an|the|my|your|his|her|their "
            f"{_PEOPLE}",
            "hurt|harm|kill|injure as many people|victims",
            "hide|dispose of? the|a body|corpse",
            "make|making|synthesize|synthesise|produce sarin|ricin|anthrax|mustard",
        ],
        "controversial": [
            "bomb|bombs|explosive|explosives|grenade|grenades",
            "murder|murdered|murders|murderer",
            "massacre|massacres|behead|beheaded|beheading|torture|tortured|torturing",
            "molotov", "mass shooting|shootings", "nerve agent|agents",
        ],
    },
    _ILL: {
        "unsafe": [
            "launder|laundering|launders money|cash|funds",
            "steal|stealing|steals credit|debit card|cards",
            "card|atm skimmer|skimmers",
            "without getting caught",
            "counterfeit money|bills|currency|banknotes",
            f"cook|cooking|make|making|synthesize|synthesise|buy|buying|sell|selling {_DRUGS}",
            "hack|hacking into someone|somebody|your|his|her|their account|accounts|email|phone",
        ],
        "controversial": [
            "money laundering", "tax evasion", "shoplift|shoplifting", "ransomware", "phishing",
            "cocaine|heroin|methamphetamine|fentanyl",
        ],
    },
    _SEX: {
        "unsafe": ["child|kiddie porn|pornography", "csam", "explicit sex|sexual scene|scenes|acts", "hardcore porn"],
        "controversial": ["porn|porno|pornography|pornographic", "erotic|erotica", "nsfw", "nudes"],
    },
    _PII: {
        "unsafe": [
            "social security number|no is|was",
            "home address is|was",
            "passport|credit|bank card|account? number is|was",
        ],
        "unsafe_regex": [
            "000-00-0000(?!0)",  # US social security number
            "0000[ -]0000[ -]0000[ -]0000(?!0)",  # payment card number
        ],
        "controversial": ["password is|was"],
    },
    _SUI: {
        "unsafe": [
            "instructions|instruction|methods|method|guide for|of suicide",
            "suicide with|using pills|pill|gun|rope|knife|poison|gas",
            "kill|hurt|harm|cut|cutting yourself|myself",
            "overdose|overdosing on purpose",
        ],
        "controversial": ["suicide|suicidal|suicides", "self harm", "commit|committing suicide"],
    },
    _UNETH: {
        "unsafe": ["blackmail|blackmailing him|her|them|someone|your"],
        "controversial": ["blackmail|blackmailing", "cheat|cheating on an? exam|exams|test|tests"],
    },
    _POL: {"controversial": ["extremist|terrorist propaganda|manifesto|recruitment"]},
    _COPY: {
        "unsafe": [
            "pirated|cracked software|games|game|movies|copy|copies",
            "bypass|bypassing|remove|removing drm|copy protection",
        ],
        "controversial": ["keygen|warez|torrent|torrents"],
    },
    _JAIL: {
        "unsafe": ["ignore|disregard all? previous|prior|above instructions", "dan mode"],
        "controversial": ["jailbreak|jailbreaking|jailbroken"],
    },
}

_SEVERITIES = {"unsafe": Label.unsafe, "controversial": Label.controversial}
_WORD_ALT = re.compile(r"[a-z0-9]+")


def _norm_table() -> bytes:
    """Byte map: ASCII letters lower-cased, other ASCII non-alphanumerics to space, non-ASCII bytes kept.

    Non-ASCII bytes stay word characters, so 'café' is one word; the map keeps offsets unchanged.
    """
    table = bytearray(range(256))
    for c in range(128):
        table[c] = ord(chr(c).lower()) if chr(c).isalnum() else 32
    return bytes(table)


_NORM = _norm_table()
_SHAPE = bytes(48 if 48 <= c <= 57 else ord(chr(c).lower()) if c < 128 else c for c in range(256))


@dataclass
class KeywordLabelerConfig:
    """Options of the ``keyword`` heuristic (not a classifier)."""

    patterns_file: str = ""
    """YAML file of ``{category: {unsafe: [...], controversial: [...], unsafe_regex: [...]}}`` replacing the
    built-in lists (phrase syntax in the module doc); empty uses the built-in lists."""
    follow_segments: int = 0
    """Label this many segments after an unsafe one ``controversial`` (same categories); 0 turns it off."""

    def __post_init__(self):
        if self.follow_segments < 0:
            raise ValueError(f"keyword.follow_segments={self.follow_segments}: must be >= 0 (0 turns it off)")


def _phrase_regex(phrase: str, where: str) -> tuple[list[bytes], re.Pattern[bytes]]:
    """First-word alternatives and the regex for the rest of a phrase (matched right after the first word)."""
    words = phrase.split()
    if not words or words[0].endswith("?"):
        raise SRPError(f"{where}: phrase {phrase!r} is empty or starts with an optional word")
    parts = []
    for word in words:
        alts = word.removesuffix("?").split("|")
        if not all(_WORD_ALT.fullmatch(a) for a in alts):
            raise SRPError(f"{where}: phrase {phrase!r}: word {word!r} must be lower-case ASCII letters/digits, '|'")
        parts.append((alts, word.endswith("?")))
    rest = "".join(f"(?: +(?:{'|'.join(alts)})){'?' if optional else ''}" for alts, optional in parts[1:])
    return [a.encode() for a in parts[0][0]], re.compile((rest + "(?![^ ])").encode())


class _Rules:
    """Compiled keyword lists: phrases indexed by their first word, raw regexes in one alternation."""

    def __init__(self, spec: dict, where: str):
        self.rules: list[tuple[Label, str]] = []
        self.by_first: dict[bytes, list[tuple[re.Pattern[bytes], int]]] = {}
        self.shapes: list[tuple[re.Pattern[bytes], int]] = []
        for category, lists in spec.items():
            if not isinstance(lists, dict):
                raise SRPError(f"{where}: category {category!r} must map to {{unsafe: [...], controversial: [...]}}")
            for key, entries in lists.items():
                severity = _SEVERITIES.get(key.removesuffix("_regex"))
                if severity is None or not isinstance(entries, list):
                    raise SRPError(
                        f"{where}: {category!r}: unknown key {key!r} or not a list "
                        "(known: unsafe, controversial, unsafe_regex, controversial_regex)"
                    )
                for entry in entries:
                    rule = len(self.rules)
                    self.rules.append((severity, str(category)))
                    if key.endswith("_regex"):
                        try:
                            self.shapes.append((re.compile(str(entry).encode()), rule))
                        except re.error as exc:
                            raise SRPError(f"{where}: {category!r}: invalid regex {entry!r}: {exc}") from None
                        continue
                    firsts, rest = _phrase_regex(str(entry), f"{where}: {category!r}")
                    for first in firsts:
                        self.by_first.setdefault(first, []).append((rest, rule))
        self.firsts = frozenset(self.by_first)

    def find(self, data: bytes, norm: bytes) -> list[tuple[int, int]]:
        """``(end offset, rule)`` of every match in the UTF-8 ``data`` (``norm``: its normalised bytes)."""
        found = []
        for first in self.firsts.intersection(norm.split()):
            pos = norm.find(first)
            while pos >= 0:
                if pos == 0 or norm[pos - 1] == 32:  # starts a word
                    after = pos + len(first)
                    found += [(m.end(), rule) for rx, rule in self.by_first[first] if (m := rx.match(norm, after))]
                pos = norm.find(first, pos + 1)
        shape = data.translate(_SHAPE) if self.shapes else b""
        for rx, rule in self.shapes:
            # Every start position counts (overlapping matches, as for phrases): search again from the next byte
            # after each match; matches are rare, so this costs about one finditer pass.
            m = rx.search(shape)
            while m is not None:
                if m.start() == 0 or norm[m.start() - 1] == 32:
                    found.append((m.end(), rule))
                m = rx.search(shape, m.start() + 1)
        return found


def _category_order(name: str) -> tuple[int, str]:
    return (QWEN3GUARD_CATEGORIES.index(name) if name in QWEN3GUARD_CATEGORIES else len(QWEN3GUARD_CATEGORIES), name)


@LABELERS.register("keyword", config=KeywordLabelerConfig)
class KeywordLabeler(Labeler):
    """Heuristic labeler: phrase lists per Qwen3Guard category (see the module doc; not a classifier)."""

    def __init__(self, config: KeywordLabelerConfig):
        self.config = config
        if config.patterns_file:
            try:
                with open(config.patterns_file, "rb") as f:
                    raw = f.read()
                spec = yaml.safe_load(raw)
            except (OSError, yaml.YAMLError) as exc:
                raise SRPError(f"keyword.patterns_file={config.patterns_file!r}: {exc}") from None
            if not isinstance(spec, dict):
                raise SRPError(f"{config.patterns_file}: expected a mapping of category -> lists")
            self._source = "file-" + hashlib.sha256(raw).hexdigest()[:12]
            self._rules = _Rules(spec, config.patterns_file)
        else:
            self._source = "builtin-v1"
            self._rules = _Rules(BUILTIN_KEYWORDS, "built-in keyword lists")

    @property
    def identity(self) -> str:
        """``keyword:<lists>`` (+ ``:follow=N``)."""
        follow = f":follow={self.config.follow_segments}" if self.config.follow_segments else ""
        return f"keyword:{self._source}{follow}"

    def label_documents(self, docs: Sequence[SegmentedDocument]) -> list[list[SegmentLabel]]:
        """Label every segment of every document (never fails)."""
        return [self.label_segments(d.segments) for d in docs]

    def label_segments(self, segments: Sequence[str]) -> list[SegmentLabel]:
        """Labels of the segments of one document (matched over the joined text, see the module doc)."""
        data = "".join(segments).encode("utf-8")
        norm = data.translate(_NORM)
        found = self._rules.find(data, norm)
        safe = SegmentLabel(Label.safe)
        if not found:
            return [safe] * len(segments)
        ends, total = [], 0
        for s in segments:
            total += len(s.encode("utf-8"))
            ends.append(total)
        hits: list[set[int]] = [set() for _ in segments]
        for end, rule in found:
            hits[bisect.bisect_left(ends, end)].add(rule)  # the segment holding the match's last byte
        labels = [self._verdict(h) if h else safe for h in hits]
        return self._follow(labels)

    def _verdict(self, rules: set[int]) -> SegmentLabel:
        severities = {self._rules.rules[r][0] for r in rules}
        cats = sorted({self._rules.rules[r][1] for r in rules}, key=_category_order)
        return SegmentLabel(Label.unsafe if Label.unsafe in severities else Label.controversial, tuple(cats))

    def _follow(self, labels: list[SegmentLabel]) -> list[SegmentLabel]:
        out = list(labels)
        for i, lab in enumerate(labels):
            if lab.label == Label.unsafe:
                for j in range(i + 1, min(i + 1 + self.config.follow_segments, len(labels))):
                    if out[j].label == Label.safe:
                        out[j] = SegmentLabel(Label.controversial, lab.categories)
        return out
