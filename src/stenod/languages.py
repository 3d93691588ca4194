"""Whisper's languages: codes, English names, and the check that turns a bad ``language`` into a
400 before any model is touched.

A leaf module (it imports only :mod:`stenod.errors`), so renderers, the batch client and the API can
validate and name languages without importing an engine (rendering a transcript must not load
CTranslate2). The table is Whisper's own (openai/whisper:whisper/tokenizer.py ``LANGUAGES``);
tests/test_languages.py checks it against faster-whisper's copy so the two cannot drift apart.
"""

from __future__ import annotations

from stenod.errors import UnknownLanguageError

# Whisper's code -> English name table; OpenAI's verbose_json reports the name ("english"), not
# the code.
LANGUAGE_NAMES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian", "mk": "macedonian",
    "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian", "ne": "nepali",
    "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer",
    "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan",
    "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi", "gu": "gujarati",
    "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek", "fo": "faroese",
    "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese",
    "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog",
    "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala",
    "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}

WHISPER_LANGUAGES: frozenset[str] = frozenset(LANGUAGE_NAMES)
"""Every ISO code a Whisper model was trained on."""
AUTO_VALUES = frozenset({"", "auto", "detect"})
"""Values of ``language`` that mean "detect it"."""
CODES_BY_NAME: dict[str, str] = {name: code for code, name in LANGUAGE_NAMES.items()}
"""English name -> code, for reading OpenAI verbose_json (which reports names)."""


def normalize_language_or_raise(language: str | None) -> str | None:
    """Return a lower-case ISO code, or ``None`` for detection (``None``, ``""``, ``auto``, ``detect``).

    Raises:
        UnknownLanguageError: the code is not one Whisper was trained on.
    """
    if language is None:
        return None
    code = language.strip().lower()
    if code in AUTO_VALUES:
        return None
    if code not in WHISPER_LANGUAGES:
        raise UnknownLanguageError(language)
    return code


def language_name(code: str) -> str:
    """Whisper's English name for ``code`` (``"en"`` -> ``"english"``); unknown codes unchanged."""
    return LANGUAGE_NAMES.get(code, code)
