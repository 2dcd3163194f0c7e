from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.store import layout, records
from bench.store.history import HistoryIndex, list_runs
from bench.store.layout import INDEX, StoreError, record_key
from bench.store.records import load_records
from bench.store.run_store import RunStore

SPEC = {"name": "smoke", "cells": [{"steps": 4}]}


def _create(root: Path, **kwargs: Any) -> RunStore:
    return RunStore.create(
        root,
        spec=SPEC,
        spec_name="smoke",
        spec_hash="h1",
        environment={"git_commit": "c0ffee", "hostname": "box"},
        **kwargs,
    )


def _record(cell: str, prompt: str, status: str = "ok", **fields: Any) -> dict[str, Any]:
    return {
        "key": record_key(cell, prompt, 0, 0),
        "cell_id": cell,
        "status": status,
        **fields,
    }


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_record_key_format_and_cell_ids_without_slash() -> None:
    assert record_key("c1", "p/x", 42, 1) == "c1/p/x/42/1"
    assert layout.cell_of("c1/p/x/42/1") == "c1"
    with pytest.raises(ValueError):
        record_key("a/b", "p", 0, 0)


def test_create_lays_out_the_run_and_indexes_it(tmp_path: Path) -> None:
    with _create(tmp_path) as store:
        assert re.fullmatch(r"\d{8}-\d{6}-smoke-[0-9a-f]{6}", store.run_id)
        for name in ("manifest.json", "records.jsonl", "scores.jsonl", "audio", "lock"):
            assert (store.path / name).exists(), name
        manifest = json.loads((store.path / "manifest.json").read_text())
        assert manifest["schema_version"] == layout.SCHEMA_VERSION
        assert manifest["spec"] == SPEC and manifest["spec_hash"] == "h1"
        assert manifest["status"] == "running" and manifest["finished_at"] is None
        assert manifest["environment"]["git_commit"] == "c0ffee"
        assert (store.path / "lock").read_text().strip() == str(os.getpid())
    [entry] = HistoryIndex(tmp_path).runs()
    assert entry["run_id"] == store.run_id and entry["status"] == "running"
    assert entry["path"] == store.run_id


def test_create_refuses_an_existing_or_unsafe_run_id(tmp_path: Path) -> None:
    _create(tmp_path, run_id="r1").close()
    with pytest.raises(StoreError, match="already exists"):
        _create(tmp_path, run_id="r1")
    for bad in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(StoreError, match="not a plain folder name"):
            _create(tmp_path, run_id=bad)


def test_append_reopen_done_keys_and_retries(tmp_path: Path) -> None:
    with _create(tmp_path, run_id="r") as store:
        store.append(_record("c1", "p1", rtf=np.float32(0.5), seed=np.int64(3)))
        store.append(_record("c1", "p2", status="failed", error="OOM"))
        store.append(_record("c2", "p1", status="pending"))
        with pytest.raises(StoreError, match="no string 'status'"):
            store.append({"key": "c9/p/0/0"})
    with RunStore.open(tmp_path / "r") as store:
        assert store.repaired == []
        assert store.done_keys() == {"c1/p1/0/0", "c1/p2/0/0"}
        store.append(_record("c1", "p2", rtf=0.7))  # the retry supersedes the failure
        records = store.records()
        assert [r["key"] for r in records] == ["c1/p1/0/0", "c1/p2/0/0", "c2/p1/0/0"]
        assert records[0]["rtf"] == 0.5 and records[0]["seed"] == 3
        assert records[1]["status"] == "ok" and "error" not in records[1]


def test_scores_merge_latest_per_key(tmp_path: Path) -> None:
    with _create(tmp_path, run_id="r") as store:
        store.append(_record("c1", "p1"))
        store.append(_record("c1", "p2"))
        store.append_score("c1/p1/0/0", {"wer": 0.5, "transcript": "a"})
        store.append_score("c1/p1/0/0", {"wer": 0.1, "transcript": "b"})
        with pytest.raises(StoreError, match="no record with key"):
            store.append_score("c1/nope/0/0", {"wer": 0.0})
        with pytest.raises(StoreError, match="must not contain 'key'"):
            store.append_score("c1/p1/0/0", {"key": "x"})
        merged = {r["key"]: r for r in store.records()}
        assert merged["c1/p1/0/0"]["wer"] == 0.1 and merged["c1/p1/0/0"]["transcript"] == "b"
        assert "wer" not in merged["c1/p2/0/0"]
        assert "wer" not in store.records(with_scores=False)[0]


def test_records_in_memory_match_what_a_reader_of_the_files_sees(tmp_path: Path) -> None:
    # The store answers records() from memory; a reader without the lock parses the files.
    with _create(tmp_path, run_id="r") as store:
        store.append(_record("c1", "p1", rtf=np.float32(0.25), path=tmp_path, shape=(1, 2)))
        store.append(_record("c1", "p2", status="failed", error="OOM"))
        store.append(_record("c1", "p2", rtf=0.7))
        store.append_score("c1/p1/0/0", {"wer": 0.5})
        store.append_score("c1/p1/0/0", {"wer": 0.2, "rtf": 0.3})
        for with_scores in (True, False):
            assert store.records(with_scores) == records._merged(
                store.path, with_scores=with_scores)
        store.records()[0]["rtf"] = -1.0  # callers get copies
        assert store.records()[0]["rtf"] == 0.3
        picked = store.records(keys=["c1/p2/0/0", "nope", "c1/p1/0/0", "c1/p2/0/0"])
        assert [r["key"] for r in picked] == ["c1/p2/0/0", "c1/p1/0/0"]
        assert picked[1]["wer"] == 0.2


@pytest.mark.parametrize("tail", [b'{"key": "c1/p9/0/0", "sta', b'{"key": "c1/p9/0/0", "st\n'])
def test_torn_last_line_is_reported_and_repaired(
    tmp_path: Path, tail: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with _create(tmp_path, run_id="r") as store:
        store.append(_record("c1", "p1"))
        store.append(_record("c1", "p2"))
    records_path = tmp_path / "r" / "records.jsonl"
    whole = records_path.read_bytes()
    with open(records_path, "ab") as f:
        f.write(tail)
    with caplog.at_level(logging.WARNING, logger="bench.store"):
        store = RunStore.open(tmp_path / "r")
    with store:
        assert len(store.repaired) == 1 and "torn last line" in store.repaired[0]
        assert "torn last line" in caplog.text
        assert records_path.read_bytes() == whole
        assert store.done_keys() == {"c1/p1/0/0", "c1/p2/0/0"}
        store.append(_record("c1", "p3"))
    with RunStore.open(tmp_path / "r") as store:
        assert store.repaired == []
        assert len(store.records()) == 3


def test_torn_score_line_is_repaired(tmp_path: Path) -> None:
    with _create(tmp_path, run_id="r") as store:
        store.append(_record("c1", "p1"))
        store.append_score("c1/p1/0/0", {"wer": 0.2})
    with open(tmp_path / "r" / "scores.jsonl", "ab") as f:
        f.write(b"\x00\x00\x00")  # a crash can leave zeros where the line would be
    with RunStore.open(tmp_path / "r") as store:
        assert len(store.repaired) == 1 and "scores.jsonl" in store.repaired[0]
        assert store.records()[0]["wer"] == 0.2


def test_damaged_middle_line_is_an_error(tmp_path: Path) -> None:
    with _create(tmp_path, run_id="r") as store:
        store.append(_record("c1", "p1"))
    records_path = tmp_path / "r" / "records.jsonl"
    good = records_path.read_bytes()
    records_path.write_bytes(good + b"not json\n" + good)
    with pytest.raises(StoreError, match="line 2 is damaged"):
        RunStore.open(tmp_path / "r")
    assert records_path.read_bytes() == good + b"not json\n" + good  # nothing truncated
    with pytest.raises(StoreError, match="line 2 is damaged"):
        load_records(tmp_path / "r")
    records_path.write_bytes(good)  # once restored, it opens: the failed open let go of the lock
    RunStore.open(tmp_path / "r").close()


def test_open_rejects_non_runs_and_other_schema_versions(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a run directory"):
        RunStore.open(tmp_path)
    _create(tmp_path, run_id="r").close()
    manifest_path = tmp_path / "r" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 999
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="schema 999"):
        RunStore.open(tmp_path / "r")


def test_lock_refuses_a_second_process(tmp_path: Path) -> None:
    opener = f"""
        from bench.store.run_store import RunStore, StoreError
        try:
            RunStore.open({str(tmp_path / "r")!r}).close()
        except StoreError as err:
            print(err)
        else:
            print("opened")
    """
    store = _create(tmp_path, run_id="r")
    try:
        refused = _run_python(opener)
        assert refused.returncode == 0, refused.stderr
        assert "is in use by another process" in refused.stdout
        assert f"(pid {os.getpid()})" in refused.stdout
        assert "--out" in refused.stdout
    finally:
        store.close()
    allowed = _run_python(opener)
    assert allowed.stdout.strip() == "opened", allowed.stderr


@pytest.mark.parametrize(
    "prompt_id",
    ["../../etc/passwd", "a/b", "<script>alert(1)</script>", "x" * 1000, "..", "", "ünï cødé"],
)
def test_audio_paths_stay_inside_the_run(tmp_path: Path, prompt_id: str) -> None:
    with _create(tmp_path, run_id="r") as store:
        key = record_key("c1", prompt_id, 7, 0)
        path = store.audio_path(key)
        assert path.resolve().parent == (store.path / "audio").resolve()
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.wav|[0-9a-f]{12}\.wav", path.name)
        assert len(path.name.encode()) <= 255
        assert store.audio_path(key) == path  # deterministic
        assert store.relative(path).startswith("audio/")


def test_audio_names_do_not_collide_after_sanitising(tmp_path: Path) -> None:
    with _create(tmp_path, run_id="r") as store:
        keys = [
            record_key("c", p, 0, 0) for p in ("a/b", "a_b", "a b", "a?b", "a" * 300, "a" * 301)
        ]
        names = {store.audio_path(k).name for k in keys}
        assert len(names) == len(keys)
        with pytest.raises(StoreError, match="outside the run folder"):
            store.relative(tmp_path / "elsewhere.wav")


def test_audio_cap_survives_a_resume(tmp_path: Path) -> None:
    with _create(tmp_path, run_id="r", max_audio_files=2) as store:
        first = store.claim_audio_path("c/p1/0/0")
        assert first is not None
        first.write_bytes(b"RIFF")
        assert store.claim_audio_path("c/p1/0/0") == first  # a retry reuses its slot
        second = store.claim_audio_path("c/p2/0/0")
        assert second is not None
        second.write_bytes(b"RIFF")
        assert store.claim_audio_path("c/p3/0/0") is None
    with RunStore.open(tmp_path / "r") as store:
        assert not store.should_keep_audio()
        assert store.claim_audio_path("c/p4/0/0") is None
    with _create(tmp_path, run_id="quiet", keep_audio=False) as store:
        assert store.claim_audio_path("c/p1/0/0") is None


def test_finalize_writes_counts_parquet_and_history(tmp_path: Path) -> None:
    with _create(tmp_path, run_id="r") as store:
        store.append(_record("c1", "p1", timings={"sampling": 1.0, "decode": 0.5}))
        store.append(_record("c1", "p2", status="failed", error="boom"))
        store.append(_record("c2", "p1", timings={"sampling": 2.0, "decode": 0.25}))
        store.append_score("c1/p1/0/0", {"wer": 0.25})
        manifest = store.finalize("complete")
    assert manifest["status"] == "complete" and manifest["finished_at"]
    assert manifest["counts"] == {"records": 3, "ok": 2, "failed": 1, "cells": 2, "scored": 1}
    on_disk = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert on_disk["counts"] == manifest["counts"]

    frame = pd.read_parquet(tmp_path / "r" / "records.parquet")
    assert list(frame["key"]) == ["c1/p1/0/0", "c1/p2/0/0", "c2/p1/0/0"]
    assert frame["wer"].tolist()[0] == 0.25 and frame["wer"].isna().tolist()[1:] == [True, True]
    assert frame.loc[2, "timings.sampling"] == 2.0
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]

    [entry] = list_runs(tmp_path)
    assert entry["status"] == "complete" and entry["counts"]["records"] == 3
    assert entry["git_commit"] == "c0ffee"


def test_parquet_replacement_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _create(tmp_path, run_id="r") as store:
        store.append(_record("c1", "p1"))
        target = store.write_parquet()
        before = target.read_bytes()
        store.append(_record("c1", "p2"))

        def crash(self: pd.DataFrame, path: Path, **kwargs: Any) -> None:
            Path(path).write_bytes(b"PAR1 half a file")
            raise OSError("disk full")

        monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)
        with pytest.raises(OSError, match="disk full"):
            store.write_parquet()
        assert target.read_bytes() == before
        assert [p.name for p in store.path.iterdir() if p.name.endswith(".tmp")] == []


def test_parquet_tolerates_mixed_value_types(tmp_path: Path) -> None:
    with _create(tmp_path, run_id="r") as store:
        store.append(_record("c1", "p1", note=1.5))
        store.append(_record("c1", "p2", note="text"))
        store.finalize("complete")
    frame = pd.read_parquet(tmp_path / "r" / "records.parquet")
    assert list(frame["note"]) == ["1.5", '"text"']


def test_load_records_prefers_a_fresh_parquet(tmp_path: Path) -> None:
    with _create(tmp_path, run_id="r") as store:
        store.append(_record("c1", "p1"))
        store.finalize("complete")
        run = store.path
        parquet_time = (run / "records.parquet").stat().st_mtime_ns
        for name in ("records.jsonl", "scores.jsonl"):
            os.utime(run / name, ns=(parquet_time - 10**9, parquet_time - 10**9))
        (run / "records.parquet").write_bytes(b"")  # would fail to parse if it were read
        os.utime(run / "records.parquet", ns=(parquet_time, parquet_time))
        with pytest.raises(Exception):  # noqa: B017 (any parquet error proves it was read)
            load_records(run)
        store.write_parquet()
        # Scored after the export: the JSONL files are newer, so they are merged instead.
        store.append_score("c1/p1/0/0", {"wer": 0.5})
        later = (run / "records.parquet").stat().st_mtime_ns + 10**9
        os.utime(run / "scores.jsonl", ns=(later, later))
        frame = load_records(run)
    assert frame.loc[0, "wer"] == 0.5


def test_load_records_ignores_a_line_being_written(tmp_path: Path) -> None:
    with _create(tmp_path, run_id="r") as store:
        store.append(_record("c1", "p1"))
        with open(store.path / "records.jsonl", "ab") as f:
            f.write(b'{"key": "c1/p2')
        frame = load_records(store.path)
    assert list(frame["key"]) == ["c1/p1/0/0"]


def test_update_manifest_is_atomic_and_guards_identity(tmp_path: Path) -> None:
    with _create(tmp_path, run_id="r") as store:
        store.update_manifest(note="warm-up done")
        assert json.loads((store.path / "manifest.json").read_text())["note"] == "warm-up done"
        with pytest.raises(StoreError, match="run_id"):
            store.update_manifest(run_id="other")
    with pytest.raises(StoreError, match="closed"):
        store.append(_record("c1", "p1"))


def test_history_index_loses_nothing_under_concurrent_writers(tmp_path: Path) -> None:
    # Each writer announces itself and waits for "go", so their appends really overlap.
    writer = """
        import pathlib, time
        from bench.store.run_store import HistoryIndex
        root = pathlib.Path({root!r})
        (root / "ready-{name}").touch()
        while not (root / "go").exists():
            time.sleep(0.005)
        index = HistoryIndex(root)
        for i in range(50):
            index.append({{"run_id": f"{name}-{{i}}", "spec_name": "s", "started_at": str(i)}})
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(writer.format(root=str(tmp_path), name=name))],
        )
        for name in ("a", "b")
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{n}").exists() for n in "ab"):
        assert time.monotonic() < deadline, "writers did not start"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    lines = (tmp_path / INDEX).read_text().splitlines()
    assert len(lines) == 100
    runs = HistoryIndex(tmp_path).runs()
    assert {r["run_id"] for r in runs} == {f"{n}-{i}" for n in "ab" for i in range(50)}


def test_history_index_survives_a_torn_fragment(tmp_path: Path) -> None:
    index = HistoryIndex(tmp_path)
    index.append({"run_id": "one", "spec_name": "s", "started_at": "2"})
    with open(index.path, "ab") as f:
        f.write(b'{"run_id": "tw')
    index.append({"run_id": "three", "spec_name": "t", "started_at": "1"})
    assert [r["run_id"] for r in index.runs()] == ["three", "one"]
    assert [r["run_id"] for r in index.runs(spec_name="s")] == ["one"]


def test_list_runs_scans_manifests_without_an_index(tmp_path: Path) -> None:
    for run_id in ("r1", "r2"):
        with _create(tmp_path, run_id=run_id) as store:
            store.finalize("complete")
    (tmp_path / INDEX).unlink()
    runs = list_runs(tmp_path)
    assert {r["run_id"] for r in runs} == {"r1", "r2"}
    assert all(r["status"] == "complete" for r in runs)
    assert list_runs(tmp_path, spec_name="other") == []
