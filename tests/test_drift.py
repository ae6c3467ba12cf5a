"""Drift statistics, the stored profile, the accumulator and the report (bundle/drift/).

Statistics are checked against the libraries people trust, on the same samples and bins:
scipy.stats.ks_2samp, scipy.spatial.distance.jensenshannon, scipy.stats.chisquare, and a
PSI written out with numpy.histogram.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import make_tabular_frame
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import binomtest, chisquare, ks_2samp

from bundle.drift import DriftAccumulator, DriftThresholds, RowSampler, SlidingWindow, build_profile
from bundle.drift import statistics as stats
from bundle.errors import ManifestError, UnsupportedFormatError, UsageError
from bundle.format.profile import PROFILE_FILE, read_profile, write_profile

SCHEMA = {
    "kind": "tabular",
    "columns": [
        {"name": "age", "kind": "float"},
        {"name": "income", "kind": "float"},
        {"name": "score", "kind": "float"},
        {"name": "visits", "kind": "integer"},
        {"name": "plan", "kind": "string"},
        {"name": "region", "kind": "string"},
    ],
}


def outputs_of(frame: pd.DataFrame) -> pd.DataFrame:
    """A stand-in for a model's outputs frame: a deterministic function of the inputs."""
    score = 1 / (1 + np.exp(-frame["score"].to_numpy()))
    return pd.DataFrame(
        {"prediction": np.where(score > 0.5, "churn", "stay"), "score_churn": score}
    )


@pytest.fixture(scope="module")
def training():
    frame, _ = make_tabular_frame(20_000)
    return frame


@pytest.fixture(scope="module")
def profile(training):
    return build_profile(SCHEMA, training, outputs_of(training))


def drift_of(profile, frame, **thresholds):
    accumulator = DriftAccumulator(profile)
    for start in range(0, len(frame), 1_500):  # batches, as a file is read
        part = frame.iloc[start : start + 1_500]
        accumulator.update(part, outputs_of(part))
    return accumulator.report(thresholds or None, label="bundle 'churn' 1.0.0")


def reference_sample(feature) -> np.ndarray:
    return np.repeat(feature.reference, feature.reference_counts)


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("column", ["age", "income", "score", "visits"])
def test_ks_equals_scipy_ks_2samp_on_the_stored_reference(profile, column):
    current, _ = make_tabular_frame(7_000, seed=5)
    current["score"] = current["score"] * 1.3 + 0.2
    current.loc[:50, "age"] = 150.0  # out of range, above the training maximum
    report = drift_of(profile, current)
    sample = reference_sample(profile.feature(column))
    expected = ks_2samp(sample, current[column].dropna(), method="asymp")
    assert report[column].ks == pytest.approx(expected.statistic, abs=1e-12)


@given(
    reference=st.lists(st.integers(-20, 20), min_size=1, max_size=60),
    current=st.lists(st.integers(-25, 25), min_size=1, max_size=60),
)
def test_ks_from_counts_is_exact_with_ties(reference, current):
    values, counts = np.unique(np.asarray(reference, dtype=float), return_counts=True)
    data = np.asarray(current, dtype=float)
    below = np.array([(data < t).sum() for t in values])
    at_or_below = np.array([(data <= t).sum() for t in values])
    ours = stats.ks_statistic(counts, below, at_or_below, len(data))
    assert ours == pytest.approx(ks_2samp(reference, current).statistic, abs=1e-12)


def numpy_psi(train: np.ndarray, current: np.ndarray, edges) -> float:
    """PSI as usually written down: np.histogram on the same bins, shares floored at 1e-4."""
    bins = np.concatenate([[-np.inf], edges, [np.inf]])
    e = np.histogram(train, bins)[0] / len(train)
    a = np.histogram(current, bins)[0] / len(current)
    e, a = np.where(e == 0, 1e-4, e), np.where(a == 0, 1e-4, a)
    return float(np.sum((a - e) * np.log(a / e)))


@pytest.mark.parametrize("column", ["age", "score", "visits"])
def test_psi_matches_a_numpy_histogram_computation_on_the_same_bins(training, profile, column):
    current, _ = make_tabular_frame(6_000, seed=9)
    current["score"] = current["score"] + 0.4
    report = drift_of(profile, current)
    edges = profile.feature(column).edges
    expected = numpy_psi(training[column].to_numpy(), current[column].to_numpy(), edges)
    assert report[column].psi == pytest.approx(expected, rel=1e-9)


def test_js_and_chi_square_match_scipy_on_the_same_bins(training, profile):
    current, _ = make_tabular_frame(6_000, seed=3)
    current.loc[current.index[:2_400], "plan"] = "basic"  # basic grows from 1/3 to 60%
    report = drift_of(profile, current)
    plan = profile.feature("plan")
    categories = list(plan.categories)
    train_counts = np.array([(training["plan"] == c).sum() for c in categories])
    current_counts = np.array([(current["plan"] == c).sum() for c in categories])
    expected_js = jensenshannon(train_counts, current_counts, base=2)
    assert report["plan"].js == pytest.approx(expected_js, abs=1e-12)
    scaled = train_counts / train_counts.sum() * current_counts.sum()
    expected = chisquare(current_counts, scaled)
    assert report["plan"].chi_square == pytest.approx(expected.statistic, rel=1e-9)
    assert report["plan"].chi_square_p == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-300)
    assert report["plan"].drifted and report.drifted[0].name == "plan"


def test_statistics_without_counts_are_none():
    assert stats.psi(np.array([1, 2]), np.array([0, 0])) is None
    assert stats.js_distance(np.array([0, 0]), np.array([1, 1])) is None
    assert stats.ks_statistic(np.array([1]), np.array([0]), np.array([0]), 0) is None
    assert stats.chi_square(np.array([5, 0]), np.array([3, 4])) is None  # one bin left


# --------------------------------------------------------------------------- verdicts


def test_a_planted_shift_in_one_column_is_found_and_ranked_first(profile):
    current, _ = make_tabular_frame(8_000, seed=11)
    current["income"] = current["income"] * 1.6  # a unit change, quieter than kg -> g
    report = drift_of(profile, current)
    assert report.has_drift and not report
    assert report.features[0].name == "income"
    assert [f.name for f in report.drifted if f.role == "input"] == ["income"]
    assert report["income"].psi > 0.2 and report["income"].ks > 0.1
    assert any(reason.startswith("ks ") for reason in report["income"].reasons)


def test_an_unchanged_sample_raises_nothing(profile):
    current, _ = make_tabular_frame(8_000, seed=12)
    report = drift_of(profile, current)
    assert not report.has_drift and report
    assert report.drifted == []
    worst = report.features[0]
    assert worst.severity < 0.7, (worst.name, worst.reasons, worst.psi, worst.ks, worst.js)
    assert "No drift in 8 features." in str(report)


def test_a_new_category_is_reported_with_its_share(profile):
    current, _ = make_tabular_frame(5_000, seed=13)
    current.loc[current.index[:600], "region"] = "arctic"
    current.loc[current.index[600:650], "region"] = "moon"
    report = drift_of(profile, current)
    region = report["region"]
    assert region.unseen_share == pytest.approx(650 / 5_000)
    assert region.unseen_values == [("arctic", 0.12), ("moon", 0.01)]
    assert region.drifted and "unseen 0.13 > 0.05" in region.reasons
    text = str(report)
    assert "Unseen values of region: 'arctic' 12.0%, 'moon' 1.0%" in text
    data = json.loads(report.to_json())
    feature = next(f for f in data["features"] if f["name"] == "region")
    assert feature["unseen_values"] == [
        {"value": "arctic", "share": 0.12},
        {"value": "moon", "share": 0.01},
    ]
    assert data["drift"] is True and "region" in data["drifted_features"]


def test_missing_values_and_out_of_range_values_are_counted(profile):
    current, _ = make_tabular_frame(4_000, seed=14)
    current.loc[current.index[:800], "score"] = np.nan  # a sensor that stopped reporting
    current.loc[current.index[800:1000], "age"] = -5.0  # below the training minimum (18)
    report = drift_of(profile, current)
    assert report["score"].missing_current == pytest.approx(0.2)
    assert report["score"].missing_change == pytest.approx(0.2)
    assert "missing 0.2 > 0.05" in report["score"].reasons
    assert report["age"].out_of_range_share == pytest.approx(200 / 4_000)
    assert report["age"].bins[0] == "< 18"
    assert report["age"].current[0] == pytest.approx(0.05)


def test_output_drift_is_reported_like_input_drift(profile):
    current, _ = make_tabular_frame(5_000, seed=15)
    current["score"] = current["score"] + 1.0
    report = drift_of(profile, current)
    outputs = {f.name: f for f in report.features if f.role == "output"}
    assert set(outputs) == {"prediction", "score_churn"}
    assert outputs["prediction"].drifted and outputs["score_churn"].drifted


def test_thresholds_are_settable_and_checked(profile):
    current, _ = make_tabular_frame(5_000, seed=16)
    current["income"] = current["income"] * 1.6
    lenient = drift_of(profile, current, psi=None, ks=None, out_of_range=None)
    assert not lenient["income"].drifted
    with pytest.raises(UsageError, match=r"Unknown drift threshold\(s\) \['kss'\]; known: psi"):
        DriftThresholds.of({"kss": 0.1})
    with pytest.raises(UsageError, match="psi must be a non-negative number or None; got -1"):
        DriftThresholds(psi=-1)


def test_p_values_equal_scipys_tests():
    rng = np.random.default_rng(5)
    reference, current = rng.normal(size=300), rng.normal(0.3, 1, size=40)
    expected = ks_2samp(reference, current, method="asymp")
    assert stats.ks_p_value(expected.statistic, 40, 300) == pytest.approx(expected.pvalue, rel=1e-9)
    for count, total, share in [(7, 40, 0.05), (0, 10, 0.05), (40, 40, 0.5)]:
        greater = binomtest(count, total, share, alternative="greater").pvalue
        less = binomtest(count, total, share, alternative="less").pvalue
        assert stats.share_p_value(count, total, share) == pytest.approx(greater, rel=1e-9)
        assert stats.share_p_value(count, total, share, below=True) == pytest.approx(less, rel=1e-9)


def test_a_few_rows_are_flagged_only_for_a_significant_shift(profile):
    same, _ = make_tabular_frame(40, seed=17)
    unchanged = drift_of(profile, same)
    assert not unchanged.has_drift  # 40 rows of the training distribution: no false alarm
    shifted = same.copy()
    shifted["income"] = shifted["income"] * 10  # a unit changed: obvious even in 40 rows
    report = drift_of(profile, shifted)
    assert report.drifted[0].name == "income"
    assert report["income"].ks > 0.5
    assert any("(p=" in reason for reason in report["income"].reasons)
    assert [f.name for f in report.drifted if f.role == "input"] == ["income"]


def test_a_noisy_statistic_in_a_few_rows_says_too_few_rows(profile):
    current, _ = make_tabular_frame(12, seed=19)
    current["income"] = current["income"] * 1.15  # a mild shift: KS over 0.1, not significant
    report = drift_of(profile, current)
    assert not report["income"].drifted and report["income"].ks > 0.1
    assert not report["income"].enough_rows
    assert "too few rows" in str(report)


def test_absent_columns_count_as_missing(profile):
    current, _ = make_tabular_frame(1_000, seed=18)
    report = drift_of(profile, current.drop(columns=["visits"]))
    assert report["visits"].missing_current == 1.0 and report["visits"].drifted


def _input_drift(profile, frame):
    accumulator = DriftAccumulator(profile, outputs=False)
    accumulator.update(frame)
    return accumulator.report(None, label="bundle 'events' 1")


def _datetimes(n, seed, *, start="2024-01-01"):
    rng = np.random.default_rng(seed)
    return pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, 365 * 24, n), unit="h")


@pytest.mark.parametrize(
    "as_sent",
    [
        lambda when: when.dt.strftime("%Y-%m-%dT%H:%M:%S"),  # JSON records, a server's requests
        lambda when: when.astype(str),  # a CSV column read as text
        lambda when: when.dt.tz_localize("UTC").dt.tz_convert("Europe/Paris").astype(str),
    ],
    ids=["iso", "csv-text", "offsets"],
)
def test_datetimes_sent_as_text_are_read_as_the_contract_reads_them(as_sent):
    """A datetime column reached drift as ISO-8601 text (CSV, JSON Lines, records, a
    server's requests) and counted 100% missing: a drift on every unchanged file."""
    schema = {"kind": "tabular", "columns": [{"name": "when", "kind": "datetime"}]}
    training = pd.DataFrame({"when": _datetimes(5_000, seed=1)})
    profile = build_profile(schema, training)
    same = pd.DataFrame({"when": _datetimes(2_000, seed=2)})
    later = pd.DataFrame({"when": _datetimes(2_000, seed=2, start="2025-06-01")})

    typed = _input_drift(profile, same)["when"]
    texted = _input_drift(profile, same.assign(when=as_sent(same["when"])))["when"]
    assert texted.missing_current == 0.0 and not texted.drifted, texted.reasons
    assert (texted.psi, texted.ks) == pytest.approx((typed.psi, typed.ks), abs=1e-12)
    shifted = _input_drift(profile, later.assign(when=as_sent(later["when"])))["when"]
    assert shifted.drifted and shifted.out_of_range_share == 1.0, shifted.reasons


def test_text_that_is_no_datetime_still_counts_as_missing():
    schema = {"kind": "tabular", "columns": [{"name": "when", "kind": "datetime"}]}
    profile = build_profile(schema, pd.DataFrame({"when": _datetimes(1_000, seed=3)}))
    frame = pd.DataFrame({"when": ["2024-02-30", "yesterday", None, "2024-03-01"] * 50})
    assert _input_drift(profile, frame)["when"].missing_current == 0.75


# --------------------------------------------------------------------------- accumulator


def test_counts_merge_to_the_same_report_as_one_pass(profile):
    current, _ = make_tabular_frame(6_000, seed=19)
    current.loc[current.index[:99], "plan"] = "gold"
    whole = DriftAccumulator(profile)
    whole.update(current, outputs_of(current))
    parts = [DriftAccumulator(profile) for _ in range(3)]
    for accumulator, index in zip(parts, np.array_split(np.arange(6_000), 3), strict=True):
        accumulator.update(current.iloc[index], outputs_of(current.iloc[index]))
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.report().to_dict() == whole.report().to_dict()


def test_sliding_window_forgets_old_slots():
    frame, _ = make_tabular_frame(2_000)
    profile = build_profile(SCHEMA, frame)
    now = [0.0]
    window = SlidingWindow(profile, seconds=60, slots=6, clock=lambda: now[0])
    shifted = frame.assign(score=frame["score"] + 3)
    window.update(shifted)
    assert window.report().has_drift
    now[0] = 30.0
    window.update(frame)
    assert window.snapshot().rows == 4_000
    now[0] = 65.0  # the shifted slot [0, 10) has left the 60 s window
    window.update(frame.iloc[:1_000])
    assert window.snapshot().rows == 3_000
    assert not window.report().has_drift
    with pytest.raises(UsageError, match=r"needs seconds > 0 and slots >= 1; got 0\.0, 6"):
        SlidingWindow(profile, seconds=0.0, slots=6)


def test_sampler_keeps_a_bounded_uniform_sample():
    sampler = RowSampler(1_000, seed=1)
    for start in range(0, 50_000, 7_000):
        sampler.add(pd.DataFrame({"i": np.arange(start, min(start + 7_000, 50_000))}))
    sample = sampler.sample
    assert len(sample) == 1_000 and sampler.rows_seen == 50_000
    assert sample["i"].is_unique
    # uniform: each fifth of the stream holds about a fifth of the sample
    counts = np.bincount(sample["i"].to_numpy() // 10_000, minlength=5)
    assert counts.min() > 140 and counts.max() < 260, counts


def test_images_darker_than_at_training_drift_per_channel():
    rng = np.random.default_rng(0)
    images = rng.integers(60, 256, size=(500, 8, 8, 3), dtype=np.uint8)
    schema = {"kind": "array", "shape": [8, 8, 3], "dtype": "uint8", "value_kind": "integer"}
    profile = build_profile(schema, images)
    assert [f.name for f in profile][:2] == ["input[c0] mean", "input[c0] std"]
    darker = images.copy()
    darker[..., 1] = darker[..., 1] // 2  # the green channel dims
    accumulator = DriftAccumulator(profile)
    accumulator.update(darker)
    report = accumulator.report()
    assert report.features[0].name == "input[c1] mean"
    assert {f.name for f in report.drifted} == {"input[c1] mean", "input[c1] std"}


def test_text_columns_are_followed_by_their_length():
    rng = np.random.default_rng(0)
    words = np.array(["alpha", "beta", "gamma", "delta", "epsilon"])
    texts = [" ".join(rng.choice(words, rng.integers(2, 9))) for _ in range(3_000)]
    frame = pd.DataFrame({"review": texts})
    schema = {"kind": "tabular", "columns": [{"name": "review", "kind": "string"}]}
    profile = build_profile(schema, frame)
    assert profile.feature("review").kind == "text"
    accumulator = DriftAccumulator(profile)
    accumulator.update(frame.assign(review=frame["review"] + " " + frame["review"]))
    assert accumulator.report()["review"].drifted


# --------------------------------------------------------------------------- stored profile


def test_profile_round_trips_without_pickle(tmp_path, profile):
    record = write_profile(profile, tmp_path)
    assert record == {
        "file": "profile/profile.json",
        "arrays": "profile/profile.npz",
        "rows": 20_000,
        "source_rows": 20_000,
        "inputs": 6,
        "outputs": 2,
    }
    loaded = read_profile(tmp_path, record)
    assert loaded.features == profile.features  # compares everything but the arrays
    for ours, theirs in zip(loaded, profile, strict=True):
        if ours.is_numeric:
            np.testing.assert_array_equal(ours.reference, theirs.reference)
            np.testing.assert_array_equal(ours.reference_counts, theirs.reference_counts)
        else:
            np.testing.assert_array_equal(ours.seen, theirs.seen)
    with np.load(tmp_path / "profile/profile.npz", allow_pickle=False) as npz:
        assert all(npz[key].dtype != object for key in npz.files)
    assert "20,000 rows profiled" in str(loaded)
    assert "plan         input   categorical  0.0%     plus 34%, pro 33%, basic 33%" in str(loaded)


def test_a_hand_edited_profile_is_refused(tmp_path, profile):
    record = write_profile(profile, tmp_path)
    path = tmp_path / PROFILE_FILE
    data = json.loads(path.read_text())
    data["features"][0]["edges"] = [3.0, 1.0]
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"feature 0 \('age'\) has 2 edges and 10 histogram"):
        read_profile(tmp_path, record)
    data["features"][0]["edges"] = [0.123456]
    data["features"][0]["histogram"] = [1, 2]
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"\('age'\) has bin edges that are not reference"):
        read_profile(tmp_path, record)
    data["features"][0]["shiny"] = True
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"unknown keys \['shiny'\]"):
        read_profile(tmp_path, record)
    data["profile_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(UnsupportedFormatError, match="profile version 99; this keras-bundle"):
        read_profile(tmp_path, record)
    shutil.rmtree(tmp_path / "profile")
    with pytest.raises(ManifestError, match="is not a readable JSON profile"):
        read_profile(tmp_path, record)


def test_a_profile_with_an_unsorted_reference_is_refused(tmp_path, profile):
    record = write_profile(profile, tmp_path)
    npz = tmp_path / "profile" / "profile.npz"
    with np.load(npz, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    arrays["2.values"] = arrays["2.values"][::-1].copy()
    np.savez(npz, **arrays)
    with pytest.raises(ManifestError, match=r"feature 2 \('score'\) has no valid reference"):
        read_profile(tmp_path, record)
