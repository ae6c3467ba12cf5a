"""The profile saved in a bundle, `Bundle.drift`, and `bundle drift` / `bundle inspect`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, make_tabular_frame, run_python

from bundle import Bundle, BundleError, IntegrityError, SchemaError
from bundle.cli import main
from bundle.drift import DriftThresholds

GOLDEN = REPO / "tests" / "data" / "golden-v1" / "1"


@pytest.fixture(scope="module")
def drift_bundle(tmp_path_factory, tabular_parts):
    """A tabular bundle profiled from a 3,000-row Parquet file that also holds the target."""
    preprocess, labels, model = tabular_parts
    frame, target = make_tabular_frame(3_000, seed=21)
    data = tmp_path_factory.mktemp("profile-data") / "train.parquet"
    frame.assign(target=target).to_parquet(data)
    bundle = Bundle(
        model,
        preprocess=preprocess,
        postprocess=labels,
        input_example=frame.iloc[:50],
        name="churn",
        version="2.0.0",
    )
    path = bundle.save(tmp_path_factory.mktemp("drift") / "churn", profile_data=data)
    return path, Bundle.load(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Current data files: unchanged rows, and rows where one column moved."""
    folder = tmp_path_factory.mktemp("current")
    same, _ = make_tabular_frame(4_000, seed=22)
    shifted = same.copy()
    shifted["visits"] = shifted["visits"] * 3  # a counter that started counting in thirds
    same.to_parquet(folder / "same.parquet")
    shifted.to_parquet(folder / "shifted.parquet")
    shifted.to_csv(folder / "shifted.csv", index=False)
    shifted.to_json(folder / "shifted.jsonl", orient="records", lines=True)
    return folder


def test_the_profile_is_stored_listed_and_hashed(drift_bundle):
    path, loaded = drift_bundle
    record = loaded.manifest.profile
    assert record == {
        "file": "profile/profile.json",
        "arrays": "profile/profile.npz",
        "rows": 3_000,
        "source_rows": 3_000,
        "inputs": 6,
        "outputs": 4,
    }
    assert {"profile/profile.json", "profile/profile.npz"} <= set(loaded.manifest.files)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["profile"] == record
    profile = loaded.profile
    assert [f.name for f in profile.outputs] == [
        "prediction",
        "score_churn",
        "score_stay",
        "score_upgrade",
    ]
    assert "target" not in [f.name for f in profile]  # a column the bundle does not know
    assert profile.feature("plan").categories is not None
    assert profile.feature("income").missing_rate == pytest.approx(0.1, abs=0.02)


def test_a_tampered_profile_is_refused_at_load(drift_bundle, bundle_copy):
    copy = bundle_copy(drift_bundle[0])
    profile = copy / "profile" / "profile.json"
    profile.write_text(profile.read_text().replace('"missing": 0', '"missing": 1', 1))
    with pytest.raises(IntegrityError, match=r"profile/profile.json: .* bytes on disk"):
        Bundle.load(copy)


def test_a_planted_shift_is_found_in_a_file_and_ranked_first(drift_bundle, files):
    _, loaded = drift_bundle
    report = loaded.drift(files / "shifted.parquet", batch_size=1_000)
    assert report.rows == 4_000
    assert report.features[0].name == "visits"
    assert [f.name for f in report.drifted if f.role == "input"] == ["visits"]
    assert report["visits"].out_of_range_share > 0.2


def test_the_moved_input_ranks_before_the_outputs_it_drags_along(drift_bundle):
    """A unit change in a column the model leans on saturates its scores, whose statistics
    then exceed the column's own: the report led with score_* instead of the column."""
    _, loaded = drift_bundle
    frame, _ = make_tabular_frame(2_000, seed=24)
    report = loaded.drift(frame.assign(score=frame["score"] * 1_000))
    outputs = [f for f in report.drifted if f.role == "output"]
    assert outputs and max(f.severity for f in outputs) > report["score"].severity
    assert report.drifted[0].name == "score"
    assert [f.role for f in report.drifted] == sorted(
        (f.role for f in report.drifted), key=lambda role: role != "input"
    )
    assert report.features[0].name == "score" and "score" in str(report).split("\n")[2]


def test_an_unchanged_file_raises_nothing(drift_bundle, files):
    report = drift_bundle[1].drift(files / "same.parquet")
    assert report.drifted == [] and bool(report)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_csv_and_json_lines_give_the_parquet_report(drift_bundle, files, suffix):
    _, loaded = drift_bundle
    expected = loaded.drift(files / "shifted.parquet").to_dict()
    got = loaded.drift(files / f"shifted.{suffix}", batch_size=1_500).to_dict()
    assert got["features"] == expected["features"]


def test_a_csv_value_that_is_no_number_counts_as_missing_not_a_refusal(
    drift_bundle, tmp_path, capsys
):
    """A typed CSV read refused the whole file for one 'ERR' in a numeric column, while the
    same rows as a DataFrame count it as missing: the day a sensor writes errors is the day
    the drift report is needed."""
    _, loaded = drift_bundle
    frame, _ = make_tabular_frame(1_000, seed=25)
    frame["score"] = frame["score"].astype(object)
    frame.loc[frame.index[:300], "score"] = "ERR"
    frame.to_csv(tmp_path / "errors.csv", index=False)

    expected = loaded.drift(frame, outputs=False).to_dict()
    report = loaded.drift(tmp_path / "errors.csv", outputs=False)
    assert report.to_dict()["features"] == expected["features"]
    assert report["score"].missing_current == 0.3 and report["score"].drifted
    code = main(["drift", str(drift_bundle[0]), str(tmp_path / "errors.csv"), "--no-outputs"])
    out = capsys.readouterr().out
    assert code == 1 and "- score: missing 0.3 > 0.05" in out


def test_any_input_predict_accepts_can_be_compared(drift_bundle):
    _, loaded = drift_bundle
    frame, _ = make_tabular_frame(600, seed=23)
    frame.loc[frame.index[:120], "plan"] = "enterprise"
    reports = [
        loaded.drift(frame, thresholds={"min_rows": 10}),
        loaded.drift(frame.to_dict(orient="records"), thresholds={"min_rows": 10}),
        loaded.drift(frame.to_dict(orient="list"), thresholds={"min_rows": 10}),
    ]
    for report in reports:
        assert report["plan"].unseen_values == [("enterprise", 0.2)]
        assert report.features[0].name == "plan"
    one_row = loaded.drift(frame.iloc[0].to_dict(), thresholds=DriftThresholds(min_rows=1))
    assert one_row.rows == 1


def test_a_bundle_without_a_profile_loads_and_says_what_to_do():
    golden = Bundle.load(GOLDEN)
    assert golden.manifest.profile is None and golden.profile is None
    frame, _ = make_tabular_frame(10)
    with pytest.raises(BundleError, match=r"has no training profile.*\n.*profile_data="):
        golden.drift(frame)


def test_the_image_bundle_is_profiled_per_channel(image_bundle, image_data):
    path, _ = image_bundle
    loaded = Bundle.load(path)
    names = [f.name for f in loaded.profile.inputs]
    assert names == ["input[c0] mean", "input[c0] std"]
    images, _ = image_data
    darker = (images // 3).astype(np.uint8)
    report = loaded.drift(darker, thresholds={"min_rows": 10})
    assert report.features[0].name == "input[c0] mean" and report.features[0].drifted


def test_one_image_without_the_batch_axis_is_one_row_and_a_flattened_batch_is_refused(
    image_bundle, image_data
):
    """Drift read an (8, 8, 1) sample as 8 rows of another shape, and a flattened (n, 64)
    batch as pixels of one channel: silent garbage where predict adds the batch axis or
    refuses with a reshape hint."""
    path, _ = image_bundle
    loaded = Bundle.load(path)
    images, _ = image_data
    one = loaded.drift(images[0], thresholds={"min_rows": 1})
    batch_of_one = loaded.drift(images[:1], thresholds={"min_rows": 1})
    assert one.rows == 1
    assert one.to_json() == batch_of_one.to_json()
    with pytest.raises(SchemaError, match=r"64 = 8\*8\*1: the image looks flattened"):
        loaded.drift(images.reshape(len(images), -1))


# --------------------------------------------------------------------------- the command


def test_drift_command_exits_1_on_drift_and_writes_html(drift_bundle, files, tmp_path, capsys):
    path, _ = drift_bundle
    html = tmp_path / "report.html"
    code = main(["drift", str(path), str(files / "shifted.parquet"), "--html", str(html)])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[2].startswith("visits ")
    assert "DRIFT in" in out and "- visits: " in out
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<h2>visits" in page


def test_drift_command_exits_0_without_drift(drift_bundle, files, capsys):
    code = main(["drift", str(drift_bundle[0]), str(files / "same.parquet"), "--no-outputs"])
    assert code == 0
    out = capsys.readouterr().out
    assert "No drift in 6 features." in out and "prediction" not in out


def test_drift_command_json_and_thresholds(drift_bundle, files, capsys):
    args = ["drift", str(drift_bundle[0]), str(files / "shifted.parquet"), "--json", "--no-outputs"]
    code = main([*args, "--psi", "off", "--ks", "off", "--out-of-range", "0.9"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["drift"] is False
    assert data["thresholds"]["psi"] is None and data["thresholds"]["out_of_range"] == 0.9
    visits = next(f for f in data["features"] if f["name"] == "visits")
    assert visits["psi"] > 0.2 and visits["drifted"] is False
    assert main([*args, "--psi", "-1"]) == 2
    assert "'-1' is negative; thresholds are >= 0." in capsys.readouterr().err


def test_drift_command_errors(drift_bundle, tmp_path, capsys):
    assert main(["drift", str(drift_bundle[0]), str(tmp_path / "nope.parquet")]) == 1
    assert "Error: No data file at" in capsys.readouterr().err
    assert main(["drift", str(GOLDEN), str(tmp_path / "x.txt")]) == 2
    assert "cannot tell the format of" in capsys.readouterr().err
    data = tmp_path / "rows.parquet"
    make_tabular_frame(20)[0].to_parquet(data)
    assert main(["drift", str(GOLDEN), str(data)]) == 1
    assert "has no training profile" in capsys.readouterr().err


def test_inspect_shows_the_profile(drift_bundle, capsys):
    path, _ = drift_bundle
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    section = out[out.index("Training profile") : out.index("Steps")]
    assert "3,000 rows profiled" in section
    assert "  plan           input   categorical  0.0%" in section
    assert main(["inspect", str(path), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["profile"]["rows"] == 3_000
    assert [f["name"] for f in facts["profile"]["features"]][:2] == ["age", "income"]


def test_inspect_of_a_bundle_without_profile(tmp_path, capsys):
    copy = tmp_path / "golden"
    shutil.copytree(GOLDEN, copy)
    assert main(["inspect", str(copy)]) == 0
    assert "(none: saved without a profile; `bundle drift` needs one)" in capsys.readouterr().out
    assert Path(copy / "manifest.json").read_text().count('"profile"') == 0


def test_drift_without_outputs_never_imports_keras(drift_bundle, files):
    path, _ = drift_bundle
    result = run_python(
        f"""
        import json, sys
        sys.modules["keras"] = sys.modules["tensorflow"] = None  # importing them fails
        from bundle.cli import main
        code = main(["drift", {str(path)!r}, {str(files / "shifted.parquet")!r},
                     "--no-outputs", "--json"])
        print(json.dumps({{"code": code}}))
        """
    )
    lines = result.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"code": 1}
    report = json.loads("\n".join(lines[:-1]))
    assert report["drifted_features"] == ["visits"]
    assert all(f["role"] == "input" for f in report["features"])
