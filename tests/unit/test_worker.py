"""Which generations a cell runs untimed before measuring."""

from __future__ import annotations

from pathlib import Path

from bench.run.worker import Generation, warmup_generations
from bench.spec.prompt_files import Prompt
from bench.spec.sweep import Cell
from echo_tts import SamplerConfig

CELL = Cell(id="c", sampler=SamplerConfig())


def _gens(*prompts: Prompt) -> list[Generation]:
    return [Generation(CELL, p, seed=0, repeat=0) for p in prompts]


def test_eager_cells_warm_up_on_the_first_generation_only() -> None:
    gens = _gens(Prompt("a", "Short."), Prompt("b", "A longer one."))
    assert warmup_generations(gens, 2, compiled=False) == [gens[0], gens[0]]
    assert warmup_generations(gens, 0, compiled=True) == []
    assert warmup_generations([], 1, compiled=True) == []


def test_compiled_cells_also_meet_a_second_text_and_speaker() -> None:
    spk = Path("speaker.wav")
    gens = _gens(Prompt("a", "Short."), Prompt("b", "Short."), Prompt("c", "A longer one."),
                 Prompt("d", "Short.", speaker_wav=spk), Prompt("e", "Other.", speaker_wav=spk))
    assert warmup_generations(gens, 1, compiled=True) == [gens[0], gens[2], gens[3]]
    # Nothing else to meet: the first generation alone.
    same = _gens(Prompt("a", "Short."), Prompt("b", "Short."))
    assert warmup_generations(same, 1, compiled=True) == [same[0]]


def test_every_shape_a_cell_times_is_warmed_once() -> None:
    gens = _gens(Prompt("a", "One."), Prompt("b", "Two."), Prompt("c", "Three."),
                 Prompt("d", "Four."))
    # Shapes as the worker derives them: (chunk count, speaker latents).
    shapes = {"a": (1, 0), "b": (2, 0), "c": (1, 0), "d": (1, 12)}
    out = warmup_generations(gens, 2, compiled=False, shape=lambda g: shapes[g.prompt.id])
    assert out == [gens[0], gens[0], gens[1], gens[3]]
    # No warm-up asked for: none, whatever the shapes.
    assert warmup_generations(gens, 0, compiled=False, shape=lambda g: shapes[g.prompt.id]) == []
