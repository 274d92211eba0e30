"""Results store: schema, row ids, atomic files, readers, shard merge."""

from __future__ import annotations

import numpy as np
import pytest
from invbench.bench import store
from invbench.bench.store import Store, StoreError


def _row(rid: str, status: str = "ok", **kw) -> dict:
    r = {"row_id": rid, "experiment": "e", "solver": "s", "preset": "default", "task": "t", "dataset": "d",
         "prior": "p", "image_id": rid, "seed": 0, "status": status, "message": "" if status == "ok" else "why",
         "psnr": 20.0 if status == "ok" else None}
    r.update(kw)
    return r


def test_schema_has_contract_columns_and_wal(tmp_path):
    with Store(tmp_path / "results.sqlite") as st:
        cols = {r[1] for r in st.con.execute("PRAGMA table_info(results)")}
        mode = st.con.execute("PRAGMA journal_mode").fetchone()[0]
    contract = {"row_id", "experiment", "solver", "preset", "task", "operator", "noise_sigma", "sigma_y", "dataset",
                "prior", "image_id", "seed", "status", "message", "seconds", "peak_mem_bytes", "peak_rss_bytes", "nfe",
                "vjp", "device", "torch_version", "batch_size", "config_hash", "code_version", "recon_path", "created",
                "psnr", "ssim", "lpips", "mse", "consistency", "dist_to_map", "rel_dist_to_map", "logpost_gap",
                "err_post_mean"}
    assert contract <= cols
    assert mode == "wal"


def test_row_id_is_sha256_of_identity():
    a = store.row_id("h", "s", "p", "t", "d", "pr", "img1", 0)
    assert len(a) == 64 and int(a, 16) >= 0
    assert a == store.row_id("h", "s", "p", "t", "d", "pr", "img1", 0)
    others = {store.row_id("h2", "s", "p", "t", "d", "pr", "img1", 0),
              store.row_id("h", "s", "p", "t", "d", "pr", "img1", 1),
              store.row_id("h", "s", "p", "t", "d", "pr", "img2", 0),
              store.row_id("h", "s", "p2", "t", "d", "pr", "img1", 0)}
    assert a not in others and len(others) == 4
    # fields cannot run into each other
    assert store.row_id("h", "ab", "c", "t", "d", "pr", "i", 0) != store.row_id("h", "a", "bc", "t", "d", "pr", "i", 0)


def test_write_replace_and_readers(tmp_path):
    with Store(tmp_path / "results.sqlite") as st:
        st.write_rows([_row("a", "error"), _row("b")])
        st.write_rows([_row("a")])  # redone row replaces, no duplicate
        st.set_meta({"experiment": "e", "config_hash": "x"})
        st.set_metric_status([("lpips", False, "unavailable: no weights", "alex")])
        st.write_set_metric({"experiment": "e", "solver": "s", "preset": "default", "task": "t", "dataset": "d",
                             "prior": "p"},
                            "fid", None, 2, "unavailable: no inception")
        st.write_rows([_row("k", "skipped", config_hash="x"), _row("e", "error", config_hash="x"),
                       _row("o", config_hash="x", recon_path="recon/o.png")])
        # the error row is not done
        assert st.done() == {"a": None, "b": None, "k": None, "o": "recon/o.png"}
        assert st.count_done("x") == 2 and st.count_done("other") == 0
        assert [r["row_id"] for r in st.cell_rows("x", "s", "default", "t", "d", "p")] == ["o"]
        errors = st.cell_rows("x", "s", "default", "t", "d", "p", "error")
        assert [r["row_id"] for r in errors] == ["e"]
        assert st.cell_rows("x", "s", "other-preset", "t", "d", "p") == []
        with pytest.raises(StoreError):
            st.write_rows([_row("c", "weird")])
        with pytest.raises(StoreError):
            st.write_rows([{**_row("c"), "nonsense": 1}])
    df = store.load_results(tmp_path)
    assert sorted(df.row_id) == ["a", "b", "e", "k", "o"]
    assert store.load_meta(tmp_path) == {"experiment": "e", "config_hash": "x"}
    meta = store.existing_meta(tmp_path / "results.sqlite")
    assert meta == {"experiment": "e", "config_hash": "x"}
    assert ("recon/o.png", "t", "d", "o", 0) in store.file_keys(tmp_path / "results.sqlite")
    ms = store.load_metric_status(tmp_path)
    assert ms.iloc[0].to_dict() == {"metric": "lpips", "available": 0, "note": "unavailable: no weights",
                                    "backbone": "alex"}
    sm = store.load_set_metrics(tmp_path)
    assert len(sm) == 1 and np.isnan(sm.value[0]) and sm.note[0].startswith("unavailable")
    with pytest.raises(FileNotFoundError):
        store.load_results(tmp_path / "nope")


def test_merge_keeps_finished_rows(tmp_path):
    with Store(tmp_path / "main.sqlite") as main, Store(tmp_path / "shard.sqlite") as shard:
        main.write_rows([_row("a"), _row("b", "error")])
        shard.write_rows([_row("a", "oom"), _row("b"), _row("c")])
        main.merge_from(tmp_path / "shard.sqlite")
        st = main.status_by_id()
    assert st == {"a": "ok", "b": "ok", "c": "ok"}


def test_corrupt_store_is_a_store_error(tmp_path):
    p = tmp_path / "results.sqlite"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(p)


def test_atomic_write_failure_leaves_old_file(tmp_path, monkeypatch):
    f = tmp_path / "x.bin"
    store.atomic_write_bytes(f, b"old")

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(OSError):
        store.atomic_write_bytes(f, b"new")
    assert f.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_existing_meta_reads_without_writing_and_refuses_foreign_files(tmp_path):
    import sqlite3

    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()   # a store stopped before its tables existed
    assert store.existing_meta(empty) == {}
    before = sorted(p.name for p in tmp_path.iterdir())
    with Store(tmp_path / "r.sqlite") as st:
        st.set_meta({"config_hash": "h"})
    assert store.existing_meta(tmp_path / "r.sqlite") == {"config_hash": "h"}
    # read-only: no -wal/-shm left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "r.sqlite"])
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 10)
    with pytest.raises(StoreError):
        store.existing_meta(junk)
