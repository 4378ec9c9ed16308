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
