"""The guard after the vector match: two prompts may share an answer only when what a
similarity score cannot see agrees: their numbers, negations, named entities, units,
languages, and quoted or code spans.

A static embedding puts "capital of France" next to "capital of Germany" and "do" next to
"do not"; each rule here extracts one such feature from a prompt, and a candidate whose
features differ from the request's is a miss whatever its score. Pure Python (it runs in
the Worker too). ``bench/semantic_eval.py`` measures each rule's effect on the labelled set.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

RULES = ("numbers", "negations", "entities", "units", "languages", "spans")

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
                      "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000",
                      "million": "1000000", "billion": "1000000000", "half": "0.5", "twice": "2",
                      "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th"})
# Operators change the question as much as a number does ("2 + 2" vs "2 - 2").
_OPERATOR_WORDS = {"plus": "+", "minus": "-", "times": "*", "divided": "/", "percent": "%", "squared": "^2",
                   "cubed": "^3", "factorial": "!"}
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)

_NEGATIONS = frozenset("not no never none nobody nothing nowhere neither nor without cannot "
                       "unsafe illegal impossible invisible unable".split())
_NEGATED_CONTRACTION = re.compile(r"n['’]t\b", re.IGNORECASE)

# Units and currencies, each spelling mapped to one name.
_UNIT_SPELLINGS: dict[str, tuple[str, ...]] = {
    "m": ("m", "meter", "meters", "metre", "metres"), "km": ("km", "kilometer", "kilometers", "kilometre",
                                                           "kilometres"),
    "cm": ("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
    "mm": ("mm", "millimeter", "millimeters", "millimetre", "millimetres"),
    "mile": ("mile", "miles", "mi"), "ft": ("ft", "foot", "feet"), "in": ("inch", "inches"),
    "yd": ("yd", "yard", "yards"), "kg": ("kg", "kilogram", "kilograms", "kilo", "kilos"),
    "g": ("g", "gram", "grams"), "lb": ("lb", "lbs", "pound", "pounds"), "oz": ("oz", "ounce", "ounces"),
    "t": ("ton", "tons", "tonne", "tonnes"), "st": ("stone", "stones"),
    "l": ("l", "liter", "liters", "litre", "litres"), "ml": ("ml", "milliliter", "milliliters", "millilitre",
                                                            "millilitres"),
    "gal": ("gallon", "gallons"), "qt": ("quart", "quarts"), "cup": ("cup", "cups"),
    "tbsp": ("tbsp", "tablespoon", "tablespoons"), "tsp": ("tsp", "teaspoon", "teaspoons"),
    "c": ("celsius", "centigrade", "°c"), "f": ("fahrenheit", "°f"), "k": ("kelvin",),
    "s": ("s", "sec", "secs", "second", "seconds"), "ms": ("ms", "millisecond", "milliseconds"),
    "us": ("microsecond", "microseconds"), "min": ("min", "mins", "minute", "minutes"),
    "h": ("h", "hr", "hrs", "hour", "hours"), "day": ("day", "days"), "week": ("week", "weeks"),
    "month": ("month", "months"), "year": ("year", "years"),
    "bit": ("bit", "bits"), "byte": ("byte", "bytes"), "kb": ("kb", "kilobyte", "kilobytes"),
    "mb": ("mb", "megabyte", "megabytes"), "gb": ("gb", "gigabyte", "gigabytes"),
    "tb": ("tb", "terabyte", "terabytes"), "w": ("w", "watt", "watts"), "kw": ("kw", "kilowatt", "kilowatts"),
    "hp": ("hp", "horsepower"), "mph": ("mph",), "kmh": ("km/h", "kph"), "m/s": ("m/s",),
    "acre": ("acre", "acres"), "ha": ("hectare", "hectares"), "pa": ("pa", "pascal", "pascals"),
    "bar": ("bar", "bars"), "atm": ("atm", "atmosphere", "atmospheres"), "cal": ("calorie", "calories", "kcal"),
    "usd": ("usd", "dollar", "dollars", "$"), "eur": ("eur", "euro", "euros", "€"), "gbp": ("gbp", "£", "sterling"),
    "jpy": ("jpy", "yen", "¥"), "cny": ("cny", "yuan", "renminbi"), "%": ("%", "percent", "percentage"),
}
_UNITS = {spelling: name for name, spellings in _UNIT_SPELLINGS.items() for spelling in spellings}
# "pound" is also a currency, "second" an ordinal, "in" a preposition: those spellings count
# as units only right after a number.
_AMBIGUOUS_UNITS = frozenset({"m", "g", "l", "s", "h", "t", "w", "c", "f", "k", "in", "mi", "second", "seconds",
                              "pound", "pounds", "min", "bar", "pa", "ms", "st", "ft", "day", "days", "week",
                              "weeks", "month", "months", "year", "years"})
_UNIT_TOKEN = re.compile(r"km/h|m/s|°[cf]|[$€£¥%]|[^\W_]+", re.IGNORECASE)

# Function words of a few languages: the language a prompt is written in (or asks for).
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the is are what how why who which do does a an of in to and for you me my i it this that "
                    "with can should tell give write explain".split()),
    "fr": frozenset("le la les est sont que quoi comment pourquoi qui un une des du de et pour vous moi je "
                    "ce cette avec quelle quel fonctionnent".split()),
    "de": frozenset("der die das ist sind was wie warum wer ein eine und für sie mich ich mit ich mache "
                    "eine spät".split()),
    "es": frozenset("el la los las es son qué cómo por quién un una y para usted mí yo con este esta".split()),
    "it": frozenset("il lo la gli le è sono che cosa come perché chi un una e per lei mi io con questo "
                    "quali sull dammi scrivi".split()),
    "pt": frozenset("o a os as é são que como por quem um uma e para você mim eu com este qual em".split()),
    "nl": frozenset("de het is zijn wat hoe waarom wie een en voor u mij ik met dit schrijf over".split()),
}
_LANGUAGE_NAMES = {"english": "en", "french": "fr", "german": "de", "spanish": "es", "italian": "it",
                   "portuguese": "pt", "dutch": "nl", "japanese": "ja", "korean": "ko", "chinese": "zh",
                   "russian": "ru", "arabic": "ar", "hindi": "hi"}
_SCRIPTS = (("ja", ("HIRAGANA", "KATAKANA")), ("ko", ("HANGUL",)), ("zh", ("CJK",)), ("ru", ("CYRILLIC",)),
            ("ar", ("ARABIC",)), ("hi", ("DEVANAGARI",)), ("el", ("GREEK",)), ("he", ("HEBREW",)))

# Words that start a sentence in capitals without naming anything.
_COMMON = frozenset(("what how why who whom which when where whose is are was were do does did can could "
                     "should would will shall may might must tell give write explain describe list name "
                     "compare summarize summarise translate convert recommend please compose calculate compute "
                     "define fix correct refactor reply answer run split find show make help create "
                     "i the a an in on at for to of and or but if my your our this that these those it "
                     "any some there here").split())
# Names people often write in lower case: programming languages, tools, platforms.
_LOWER_CASE_NAMES = frozenset(("python ruby rust java javascript typescript golang kotlin swift php perl scala "
                               "haskell elixir erlang clojure lua julia matlab bash powershell sql nosql mysql "
                               "postgres postgresql sqlite redis mongodb linux windows macos android ios ubuntu "
                               "debian fedora docker kubernetes git github excel react vue angular django flask "
                               "node.js nodejs npm pip").split())
# One name, several spellings.
_ALIASES = {"us": "united states", "usa": "united states", "america": "united states", "uk": "united kingdom",
            "britain": "united kingdom", "uae": "united arab emirates", "js": "javascript", "py": "python"}
_MULTIWORD = re.compile(r"\b(united states|united kingdom|united arab emirates)\b", re.IGNORECASE)
_QUOTED = re.compile(r"```(.+?)```|`([^`]+)`|\"([^\"]+)\"|“([^”]+)”|«([^»]+)»", re.DOTALL)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class PromptFeatures:
    """What the guard compares, read once from a prompt (kept with its entry)."""

    numbers: tuple[str, ...]
    negations: int
    entities: frozenset[str]
    units: frozenset[str]
    languages: frozenset[str]
    spans: frozenset[str]

    def to_json(self) -> dict[str, object]:
        return {"numbers": list(self.numbers), "negations": self.negations, "entities": sorted(self.entities),
                "units": sorted(self.units), "languages": sorted(self.languages), "spans": sorted(self.spans)}

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> PromptFeatures:
        def strings(name: str) -> list[str]:
            value = raw.get(name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"bad guard feature {name!r}")
            return value
        negations = raw.get("negations")
        if not isinstance(negations, int) or isinstance(negations, bool):
            raise ValueError("bad guard feature 'negations'")
        return cls(tuple(strings("numbers")), negations, frozenset(strings("entities")),
                   frozenset(strings("units")), frozenset(strings("languages")), frozenset(strings("spans")))


def _numbers(text: str, words: list[str]) -> tuple[str, ...]:
    found = [n.replace(",", "") for n in _NUMBER.findall(text)]
    for word in words:
        low = word.lower()
        if low in _NUMBER_WORDS:
            found.append(_NUMBER_WORDS[low])
        elif low in _OPERATOR_WORDS:
            found.append(_OPERATOR_WORDS[low])
    found.extend(ch for ch in re.findall(r"(?<=\d)\s*([-+*/^%!])|([-+*/^])\s*(?=\d)", text) for ch in ch if ch)
    return tuple(sorted(found))


def _negations(text: str, words: list[str]) -> int:
    count = len(_NEGATED_CONTRACTION.findall(text))
    return count + sum(1 for w in words if w.lower() in _NEGATIONS)


def _entities(words: list[str], text: str) -> frozenset[str]:
    names: set[str] = {m.lower() for m in _MULTIWORD.findall(text)}
    text = _MULTIWORD.sub(" ", text)
    starts = {m.start() for m in re.finditer(r"(?:^|[.!?:]\s+)([^\W_])", text)}
    for match in _WORD.finditer(text):
        word = match.group()
        low = word.lower().removesuffix("'s").removesuffix("’s")
        if low in _LOWER_CASE_NAMES:
            names.add(low)
        elif word[:1].isupper() and low not in _COMMON and low not in _LANGUAGE_NAMES:  # languages: their rule
            at_start = any(match.start() - s <= 2 for s in starts if s <= match.start())
            if not at_start or len(word) > 1:
                names.add(low)
    for token in re.findall(r"[A-Za-z]+(?:\.[A-Za-z]+)+|[A-Za-z]+\d+[A-Za-z\d]*", text):  # Node.js, S23
        names.add(token.lower())
    return frozenset(_ALIASES.get(name, name) for name in names)


def _units(text: str) -> frozenset[str]:
    """The units named, and which of them is asked for ("->km": after "in", "to", "into",
    "how many"): 100 °F in °C is not 100 °C in °F."""
    tokens = _UNIT_TOKEN.findall(text)
    found: set[str] = set()
    previous = before = ""
    for token in tokens:
        low = token.lower()
        unit = _UNITS.get(low)
        if unit is not None and (low not in _AMBIGUOUS_UNITS or previous.isdigit() or previous in _NUMBER_WORDS
                                 or previous in ("a", "an", "one", "per", "in", "to", "of", "many", "much")):
            found.add(unit)
            if previous in ("in", "to", "into") or (before == "how" and previous in ("many", "much")):
                found.add("->" + unit)
        before, previous = previous, low
    return frozenset(found)


def _languages(text: str, words: list[str]) -> frozenset[str]:
    found: set[str] = set()
    for ch in text:
        if ch.isalpha() and ord(ch) > 0x2FF:
            name = unicodedata.name(ch, "")
            for language, scripts in _SCRIPTS:
                if any(name.startswith(s) for s in scripts):
                    found.add(language)
                    break
    lower = [w.lower() for w in words]
    if not found:
        scores = Counter({language: sum(1 for w in lower if w in stops) for language, stops in _STOPWORDS.items()})
        best, score = scores.most_common(1)[0] if scores else ("en", 0)
        found.add(best if score > 0 else "en")
    # "answer in French", "translate into Spanish": the language asked for is part of the question.
    found.update("to:" + _LANGUAGE_NAMES[w] for w in lower if w in _LANGUAGE_NAMES)
    return frozenset(found)


def _spans(text: str) -> frozenset[str]:
    spans = set()
    for match in _QUOTED.finditer(text):
        span = next(g for g in match.groups() if g is not None)
        spans.add(_SPACES.sub(" ", span.strip()))
    return frozenset(spans)


def features(text: str) -> PromptFeatures:
    """The features of one prompt (the last user message's text)."""
    text = unicodedata.normalize("NFKC", text)
    spans = _spans(text)
    words = _WORD.findall(text)
    return PromptFeatures(_numbers(text, words), _negations(text, words), _entities(words, text),
                          _units(text), _languages(text, words), spans)


_CHECKS: dict[str, Callable[[PromptFeatures, PromptFeatures], bool]] = {
    "numbers": lambda a, b: a.numbers == b.numbers,
    "negations": lambda a, b: (a.negations % 2) == (b.negations % 2),
    "entities": lambda a, b: a.entities == b.entities,
    "units": lambda a, b: a.units == b.units,
    "languages": lambda a, b: a.languages == b.languages,
    "spans": lambda a, b: a.spans == b.spans,
}


def disagreement(a: PromptFeatures, b: PromptFeatures, rules: Iterable[str] = RULES) -> str | None:
    """The first rule on which the two prompts disagree (their answers may differ), or None."""
    for rule in rules:
        if not _CHECKS[rule](a, b):
            return rule
    return None
