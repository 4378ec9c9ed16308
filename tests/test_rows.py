"""One row schema: predictions round-trip through CSV and JSON unchanged."""
import json

import pytest

from sparq_perf import rows as R
from sparq_perf.hardware import get_profile
from sparq_perf.models import get_model
from sparq_perf.predict import Settings, predict


def test_prediction_rows_round_trip_csv(tmp_path):
    rows = predict(Settings(get_model("llama3-8b"), get_profile("h100-sxm"), batch=4, seq_len=8192)).rows
    path = tmp_path / "rows.csv"
    R.write_csv(path, rows)
    back = R.read_csv(path)
    assert len(back) == len(rows)
    for a, b in zip(rows, back):
        for col in R.COLUMNS:
            if isinstance(a.get(col), float):
                assert b[col] == pytest.approx(a[col], rel=1e-12), col
            else:
                assert b[col] == a.get(col), col
    assert json.loads(R.to_json(rows))[0]["source"] == "predicted"


def test_unknown_column_is_rejected():
    with pytest.raises(KeyError):
        R.normalise({"speed": 1})


def test_readme_test_command_is_what_ci_runs():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text().splitlines()
    test_cmd = next(line for line in readme if line.startswith("pip install torch"))
    assert test_cmd in (root / ".ci" / "run").read_text().splitlines()


def test_rows_of_one_point_are_that_point_of_the_vectorized_rows():
    """`rows_from` of one point gives exactly the rows `row_columns` gives that point of a grid,
    rivals included (Quest's dense first layers make its step a share-weighted mean)."""
    import math

    import numpy as np

    from sparq_perf.predict import KNOWN_METHODS, column_records, evaluate, row_columns, rows_from

    m, hw = get_model("llama3-8b"), get_profile("a100")
    batch, seq = np.array([1, 16])[:, None], np.array([4096, 32768, 131072])[None, :]
    r, k, l = np.array([16, 32, 16])[None, :], seq // 16, 8
    params = {"quest": {"k": seq // 8}, "loki": {"r": np.array([8, 8, 64])[None, :]}}
    ev = evaluate(m, hw, batch=batch, seq_len=seq, r=r, k=k, l=l, methods=KNOWN_METHODS, params=params,
                  kv_dtype="fp16")
    grid = column_records(row_columns(ev, r=r, k=k, l=l, weight_dtype="bf16", kv_dtype="fp16"))
    n = batch.size * seq.size
    for i, j in ((0, 0), (1, 2), (0, 1)):
        at = {c: int(np.broadcast_to(v, seq.shape)[0, j]) for c, v in (("r", r), ("k", k))}
        one = evaluate(m, hw, batch=int(batch[i, 0]), seq_len=int(seq[0, j]), **at, l=l, methods=KNOWN_METHODS,
                       params={meth: {c: int(np.broadcast_to(v, seq.shape)[0, j]) for c, v in p.items()}
                               for meth, p in params.items()}, kv_dtype="fp16")
        rows = rows_from(one, **at, l=l, weight_dtype="bf16", kv_dtype="fp16")
        assert len(rows) * n == len(grid)
        for op, row in enumerate(rows):
            want = {c: None if isinstance(v, float) and math.isnan(v) else v
                    for c, v in grid[op * n + i * seq.size + j].items()}
            assert list(row) == list(want) and row == want, (row["method"], row["phase"])
            assert [type(v) for v in row.values()] == [type(v) for v in want.values()]
    quest = [row for row in rows if row["method"] == "quest"]
    assert quest[0]["k"] == int(seq[0, j]) // 8 and all(row["r"] is None for row in quest)
