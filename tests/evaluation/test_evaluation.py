"""The labelled evaluation harness (issue 7): metrics by hand, the simulated
user's protocol, the reference's global codes, user files, and a tiny run of
the one command."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipbranches_widget import Catalogue, Session
from clipbranches_widget import evaluation as ev

ROOT = Path(__file__).resolve().parents[2]


def blobs(n_per=(100, 300), d=16, random_state=0):
    """Two far-apart tight blobs: class 0 and class 1."""
    rng = np.random.default_rng(random_state)
    centres = np.eye(d, dtype=np.float32)[:2] * 10
    y = np.repeat([0, 1], n_per)
    X = centres[y] + rng.standard_normal((y.size, d)).astype(np.float32) * 0.3
    perm = rng.permutation(y.size)
    return ev.LabelledSet("blobs", X[perm], y[perm], ["a", "b"])


# --- metrics, checked against hand-computed values ---


def test_prf_by_hand():
    truth = np.zeros(10, bool)
    truth[[0, 1, 2, 3]] = True
    p, r, f = ev.prf([0, 1, 5], truth)  # tp = 2 of 3 found, of 4 true
    assert p == pytest.approx(2 / 3) and r == pytest.approx(1 / 2)
    assert f == pytest.approx(4 / 7)  # 2 * (2/3) * (1/2) / (2/3 + 1/2)
    assert ev.prf([], truth) == (0.0, 0.0, 0.0)
    assert ev.prf([4, 5], truth) == (0.0, 0.0, 0.0)
    assert ev.prf([0, 1, 2, 3], truth) == (1.0, 1.0, 1.0)


def test_knn_curve_by_hand():
    # scores X @ q = [0.1, 0.9, 0.5, 0.9, -1]: order 1, 3 (tie: lower id), 2, 0, 4
    X = np.array([[0.1], [0.9], [0.5], [0.9], [-1.0]], np.float32)
    truth = np.array([True, False, True, True, False])
    order, tp = ev.knn_curve(X, np.array([1.0], np.float32), truth)
    assert order.tolist() == [1, 3, 2, 0, 4]
    assert tp.tolist() == [0, 0, 1, 2, 3, 3]
    p, r, f = ev.knn_prf(tp, 3, 3)  # first 3: ids 1, 3, 2 -> 2 true
    assert (p, r) == pytest.approx((2 / 3, 2 / 3)) and f == pytest.approx(2 / 3)
    assert ev.knn_prf(tp, 0, 3) == (0.0, 0.0, 0.0)
    assert ev.knn_prf(tp, 99, 3) == pytest.approx((3 / 5, 1.0, 0.75))  # k capped at n


def test_positives_to_beat_by_hand():
    rows = []
    for rnd, (pos, f1, knn) in enumerate([(10, 0.2, 0.3), (25, 0.5, 0.4), (40, 0.6, 0.7)], 1):
        rows.append(
            {
                "dataset": "d",
                "codes": "pca",
                "learner": "x",
                "class": "c",
                "seed": 0,
                "round": rnd,
                "positives": pos,
                "f1": f1,
                "knn_set_f1": knn,
            }
        )
        rows.append(
            {
                "dataset": "d",
                "codes": "pca",
                "learner": "x",
                "class": "c",
                "seed": 1,
                "round": rnd,
                "positives": pos,
                "f1": 0.1,
                "knn_set_f1": knn,
            }
        )
    got = ev.positives_to_beat(pd.DataFrame(rows), "knn_set_f1")
    assert got.loc[("d", "pca", "x", "c", 0)] == 25  # first round that beats k-NN
    assert np.isnan(got.loc[("d", "pca", "x", "c", 1)])  # never beat


# --- the simulated user ---


def test_simulate_follows_the_protocol():
    data = blobs()
    cat = ev.make_catalogue(data)
    learners = [
        ev.Learner("branches"),
        ev.Learner("logistic regression", "logreg"),
        ev.Learner("branches 4-d", params={"feature_subsets": [(0, 1, 2, 3)]}),
        ev.Learner("clicks", "labels"),
    ]
    rows = pd.DataFrame(ev.simulate(data, cat, 0, seed=3, learners=learners, rounds=3))
    assert len(rows) == 3 * len(learners)
    assert rows["labels"].tolist() == [60] * 4 + [120] * 4 + [180] * 4  # a page per round
    # the floor: the clicked positives alone, nothing new
    clicks = rows[rows["learner"] == "clicks"]
    assert (clicks["size"] == clicks["positives"]).all() and (clicks["precision"] == 1).all()
    assert np.allclose(clicks["recall"], clicks["positives"] / 100)
    assert (clicks["new_precision"] == 0).all()
    # recall of new items is 0, or undefined once every positive is clicked
    assert (clicks["new_recall"] == 0).equals(clicks["positives"] < 100)
    assert clicks["new_recall"].isna().equals(clicks["positives"] == 100)
    # new items: positives found beyond the clicks, out of those left to find
    lr = rows[(rows["learner"] == "logistic regression") & (rows["positives"] < 100)]
    assert len(lr) >= 1
    fresh_tp = lr["new_recall"] * (100 - lr["positives"])
    tp = lr["recall"] * 100
    assert np.allclose(fresh_tp, np.round(fresh_tp))
    assert (fresh_tp <= tp + 1e-9).all() and (fresh_tp >= tp - lr["positives"] - 1e-9).all()
    # k-NN at k = class size on separable data is perfect
    assert (rows["knn_class_f1"] == 1.0).all()
    # metrics are consistent with set sizes: tp from precision = tp from recall
    tp_p = rows["precision"] * rows["size"]
    tp_r = rows["recall"] * rows["class_size"]
    assert np.allclose(tp_p, tp_r) and np.allclose(tp_p, np.round(tp_p))
    # k-NN at the set's size, recomputed independently by brute force
    for _, r in rows.iterrows():
        assert r["knn_set_f1"] == pytest.approx(_brute_knn_f1(data, r), abs=1e-9)
    # a clean blob is found whole once the user has labelled its first page
    last = rows[(rows["round"] == 3) & (rows["learner"] == "branches")].iloc[0]
    assert last["positives"] == 100 and last["f1"] > 0.9
    _check_estimates(rows)


def _check_estimates(rows):
    """The default's estimates (what the widget prints) are recorded beside
    the truth; other learners give none."""
    default = rows[rows["learner"] == "branches"]
    others = rows[rows["learner"] != "branches"]
    assert others[["est_precision", "est_class_size"]].isna().all().all()
    assert (default["est_class_size"] >= default["positives"]).all()  # they count the clicks
    # a precision is estimated exactly when the refine added items
    assert default["est_precision"].notna().equals(default["added"] > 0)
    assert default["est_precision"].dropna().between(0, 1).all()
    # the summary compares them with the truth, round by round
    by_round = ev.summarise(rows)[0]
    got = by_round[by_round["learner"] == "branches"].set_index("round")
    for r, part in default.groupby("round"):
        ratio = (part["est_class_size"] / part["class_size"]).median()
        assert got.loc[r, "class_size_ratio"] == pytest.approx(ratio)
        want = part["new_precision"][part["est_precision"].notna()].mean()
        assert np.isnan(want) == np.isnan(got.loc[r, "added_precision"])
        if not np.isnan(want):
            assert got.loc[r, "added_precision"] == pytest.approx(want)
    # a results file of an older harness (no estimates) still summarises
    old = ev.summarise(rows.drop(columns=["est_precision", "est_class_size", "added"]))[0]
    assert old[["est_precision", "added_precision", "class_size_ratio"]].isna().all().all()
    pd.testing.assert_series_equal(old["f1"], by_round["f1"])


def _brute_knn_f1(data, r):
    truth = data.y == data.class_names.index(r["class"])
    rng = np.random.default_rng([int(r["seed"]), data.class_names.index(r["class"])])
    q = data.X[int(rng.choice(np.flatnonzero(truth)))]
    ids = np.argsort(-(data.X @ q), kind="stable")[: int(r["size"])]
    return ev.prf(ids, truth)[2] if r["size"] else 0.0


def test_default_learner_is_the_sessions_refine():
    """The row of the default learner is Session.refine's set; refitting it
    through fit_result_set on the same labels gives the same set."""
    data = blobs(random_state=1)
    cat = ev.make_catalogue(data)
    s = Session(cat, random_state=5, n_jobs=1)
    shown = s.search(data.X[np.flatnonzero(data.y == 1)[0]]).ids
    s.label(shown[data.y[shown] == 1], 1)
    s.label(shown[data.y[shown] != 1], -1)
    refined = s.refine().ids
    again = ev.fit_result_set(ev.Learner("branches"), cat, s.labels, seed=5, round_=0)
    assert np.array_equal(np.sort(refined), np.sort(again))


# --- codes ---


def test_global_quantizer_is_the_reference_formula():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 40)).astype(np.float32)
    q = ev.GlobalQuantizer(8).fit(X)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    z = (Xn - q.mean_) @ q.components_.T
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    codes = q.transform(X)
    assert codes.dtype == np.uint8
    assert np.array_equal(codes, np.floor(127.5 * z + 128).clip(0, 255).astype(np.uint8))
    # dequantised codes are the bin centres: within half a step of z
    assert np.abs(q.dequantize(codes) - z).max() <= 0.5 / 127.5 + 1e-6
    # and the product runs on them unchanged
    cat = Catalogue(codes, compressor=q, embeddings=X / np.linalg.norm(X, axis=1, keepdims=True))
    s = Session(cat, n_background=50, n_jobs=1)
    s.label([0, 1, 2], 1)
    s.label([3], -1)
    assert s.refine().count >= 1


def test_global_codes_use_less_of_the_range_than_pca_codes():
    data = ev.digits_set()
    g = ev.make_catalogue(data, "global").codes
    p = ev.make_catalogue(data, "pca").codes
    distinct = lambda c: np.mean([np.unique(c[:, j]).size for j in range(c.shape[1])])  # noqa: E731
    assert distinct(p) > 2 * distinct(g)
    with pytest.raises(ValueError, match="codes"):
        ev.make_catalogue(data, "other")


# --- data sets and user files ---


def test_synthetic_modes_make_knn_incomplete():
    data = ev.synthetic_modes_set(
        n_concepts=3, modes=4, per_mode=50, n_other=600, other_clusters=20, d=64, rank=24
    )
    assert data.class_sizes().tolist() == [200, 200, 200] and (data.y == -1).sum() == 600
    truth = data.y == 0
    order, tp = ev.knn_curve(data.X, data.X[np.flatnonzero(truth)[0]], truth)
    assert tp[50] == 50  # one mode's neighbourhood is clean
    assert ev.knn_prf(tp, 200, 200)[1] < 0.6  # but the other modes are not near it


def test_load_labelled_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 5)).astype(np.float32)
    names = np.array(["cat", "dog", "cat"] * 10)
    np.savez(tmp_path / "a.npz", embeddings=X, labels=names)
    a = ev.load_labelled_file(tmp_path / "a.npz")
    assert a.class_names == ["cat", "dog"] and a.y[:3].tolist() == [0, 1, 0]
    assert np.allclose(np.linalg.norm(a.X, axis=1), 1)
    np.save(tmp_path / "x.npy", X)
    pd.DataFrame({"label": names}).to_csv(tmp_path / "y.csv", index=False)
    b = ev.load_labelled_file(tmp_path / "x.npy", tmp_path / "y.csv")
    assert np.array_equal(a.y, b.y) and np.allclose(a.X, b.X)
    q = rng.standard_normal((2, 5)).astype(np.float32)
    np.savez(
        tmp_path / "c.npz", X=X, y=np.arange(30) % 2, queries=q, class_names=np.array(["a", "b"])
    )
    c = ev.load_labelled_file(tmp_path / "c.npz")
    assert c.queries.shape == (2, 5) and c.class_names == ["a", "b"]
    with pytest.raises(ValueError, match="labels file"):
        ev.load_labelled_file(tmp_path / "x.npy")
    np.save(tmp_path / "short.npy", np.arange(29))
    with pytest.raises(ValueError, match="expected 30 labels"):
        ev.load_labelled_file(tmp_path / "x.npy", tmp_path / "short.npy")


# --- the one command, tiny ---


def _quality_module():
    spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quality_command_quick(tmp_path):
    quality = _quality_module()
    (tmp_path / "EVALUATION.md").write_text(
        "# Mine\n\nkept text\n\n<!-- quality:begin -->\nold\n<!-- quality:end -->\ntrailer\n"
    )
    assert quality.main(["--quick", "--jobs", "1", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "EVALUATION.md").read_text()
    assert text.startswith("# Mine\n\nkept text") and text.rstrip().endswith("trailer")
    assert "\nold\n" not in text
    df = pd.read_csv(tmp_path / "docs" / "quality-results.csv.gz")
    learners = [lr.name for lr in ev.default_learners(quick=True)]
    # digits, 2 classes, 1 seed, 2 rounds: every learner on PCA codes, branches on global
    assert len(df) == 2 * 1 * 2 * len(learners) + 2 * 1 * 2
    assert set(df["learner"]) == set(learners) and set(df["codes"]) == {"pca", "global"}
    for name in learners:
        assert f"| {name} |" in text
    assert (tmp_path / "docs" / "quality-f1.png").stat().st_size > 10_000
    assert "The default's estimates against the truth (digits" in text
    assert df[["precision", "recall", "f1"]].stack().between(0, 1).all()


def test_no_positive_yet_means_no_refine():
    """A query whose first pages hold no positive: the user pages on through
    k-NN and every learner's set is empty until a positive is labelled."""
    data = blobs()
    queries = np.stack([data.X[data.y == 1].mean(0), data.X[data.y == 1].mean(0)])
    data = ev.LabelledSet("blobs", data.X, data.y, ["a", "b"], queries=queries)
    cat = ev.make_catalogue(data)
    rows = pd.DataFrame(
        ev.simulate(data, cat, 0, seed=0, learners=[ev.Learner("branches")], rounds=2)
    )
    assert rows["query"].tolist() == ["text", "text"]
    assert rows["positives"].tolist() == [0, 0] and rows["labels"].tolist() == [60, 120]
    assert (rows["size"] == 0).all() and (rows["f1"] == 0).all()


def test_quality_command_codes_and_learners(tmp_path):
    """--codes picks the variants (the first is the main one), --learners the learners."""
    quality = _quality_module()
    assert (
        quality.main(
            [
                "--quick",
                "--jobs",
                "1",
                "--out",
                str(tmp_path),
                "--classes",
                "1",
                "--codes",
                "global",
                "pca",
                "--learners",
                "branches",
                "logistic regression",
            ]
        )
        == 0
    )
    df = pd.read_csv(tmp_path / "docs" / "quality-results.csv.gz")
    assert set(zip(df["codes"], df["learner"])) == {
        ("global", "branches"),
        ("global", "logistic regression"),
        ("pca", "branches"),
    }
    text = (tmp_path / "EVALUATION.md").read_text()
    assert "after the last round (global codes)" in text
    with pytest.raises(SystemExit, match="unknown"):
        quality.main(["--quick", "--out", str(tmp_path), "--learners", "nope"])


def test_quality_command_on_a_user_file(tmp_path):
    """--data: the same tables from the user's own embeddings and labels."""
    data = blobs(n_per=(120, 200))
    np.savez(tmp_path / "mine.npz", embeddings=data.X, labels=np.array(["x", "y"])[data.y])
    quality = _quality_module()
    assert (
        quality.main(
            [
                "--quick",
                "--jobs",
                "1",
                "--out",
                str(tmp_path / "out"),
                "--data",
                str(tmp_path / "mine.npz"),
                "--codes",
                "pca",
            ]
        )
        == 0
    )
    df = pd.read_csv(tmp_path / "out" / "docs" / "quality-results.csv.gz")
    assert set(df["dataset"]) == {"mine"} and set(df["class"]) == {"x", "y"}
    assert (df["knn_class_f1"] == 1.0).all()  # separable blobs: k-NN at the class size is exact
    assert "**mine**" in (tmp_path / "out" / "EVALUATION.md").read_text()


def test_simulate_with_a_random_check_labels_it_and_records_its_estimates():
    """``check=10``: after every refine but the last the user labels the next
    page and 10 random items (Session.check); every learner is fitted on
    those labels, and the default's row records what the check estimated."""
    data = blobs()
    cat = ev.make_catalogue(data)
    learners = [ev.Learner("branches"), ev.Learner("clicks", "labels")]
    rows = pd.DataFrame(ev.simulate(data, cat, 0, seed=3, learners=learners, rounds=3, check=10))
    assert rows["labels"].tolist() == [60] * 2 + [130] * 2 + [200] * 2
    default = rows[rows["learner"] == "branches"].set_index("round")
    assert rows[rows["learner"] == "clicks"]["check_precision"].isna().all()
    assert default.loc[3, ["check_precision", "check_recall"]].isna().all()  # no check after
    for r in (1, 2):
        p, lo, hi = default.loc[
            r, ["check_precision", "check_precision_low", "check_precision_high"]
        ]
        assert 0 <= lo <= p <= hi <= 1
        assert default.loc[r, "check_recall_low"] <= default.loc[r, "check_recall_high"]
    acc = ev.check_accuracy(rows[rows["learner"] == "branches"])
    assert acc["round"].tolist() == [1, 2] and (acc["runs"] == 1).all()
    want = (default.loc[1, "check_precision"] - default.loc[1, "precision"]).__abs__()
    assert acc.iloc[0]["precision_error"] == pytest.approx(want)
    assert ev.check_accuracy(rows.drop(columns=[c for c in rows if c.startswith("check_")])).empty
