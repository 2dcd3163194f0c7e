"""Real speech for the tests and benchmarks that load real ASR, SIM and MOS models:
sentences and espeak-ng voices (espeak-ng, a Debian package, speaks them)."""

TEXTS = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags and we will go meet her.",
)
# Distinct voices to a speaker encoder: espeak's default voice, its female variant f3 and
# its Klatt-synthesiser variant (en-gb, by contrast, is the same voice with other phonemes).
VOICES = ("en-us", "en-us+f3", "en-us+klatt")
