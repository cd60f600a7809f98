"""The drift detector on real digits (no broker): shifts users meet are flagged within a few hundred
predictions, unshifted traffic is not; the statistics, correction and retrain policy behave."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats

from bench.drift.traffic import DigitsTraffic, Shift, inversion, noise, prior_weights, rotation
from services.monitor.detector import DriftConfig, evaluate_window
from services.monitor.monitor import Monitor, Prediction, WindowParams
from services.monitor.policy import RetrainPolicy
from services.monitor.reference import Reference, ReferenceStore, SnapshotMap
from services.monitor.statistics import ColumnReference, ks_test, psi, reject
from tests.monitor.conftest import SNAPSHOT


@pytest.fixture(scope="module")
def reference(traffic: DigitsTraffic) -> Reference:
    return Reference.from_profile(traffic.profile(SNAPSHOT))


def _monitor(traffic: DigitsTraffic, policy: RetrainPolicy | None = None) -> Monitor:
    profile = traffic.profile(SNAPSHOT)
    snapshots = SnapshotMap()
    snapshots.published("digits", "1", SNAPSHOT)
    return Monitor(
        DriftConfig(),
        WindowParams(size=200, step=50, span_s=3600, step_s=3600),
        ReferenceStore("memory://unused", loader=lambda url: profile),
        snapshots,
        policy or RetrainPolicy(cooldown_s=3600, budget=5, budget_period_s=86400),
        persist_windows=3,
        export=False,
    )


def _feed(monitor: Monitor, x: np.ndarray, predicted: np.ndarray, start: int, t0: float) -> list[int]:
    """Feed predictions one by one; return the positions (0-based, relative) that raised an alert."""
    alerted = []
    for i in range(len(x)):
        p = Prediction("digits", "1", x[i], str(predicted[i]), t0 + (start + i) * 0.01, f"e{start + i}")
        _, alerts, _ = monitor.observe([p])
        if alerts:
            alerted.append(i)
    return alerted


def test_unshifted_traffic_raises_no_alert_and_few_drifted_windows(
    traffic: DigitsTraffic, reference: Reference
) -> None:
    rng = np.random.default_rng(11)
    drifted = 0
    for _ in range(100):
        x, _, predicted, _ = traffic.sample(200, rng)
        verdict = evaluate_window(reference, x, [str(p) for p in predicted], DriftConfig())
        assert verdict is not None and verdict.tested == 9 + 1  # image statistics and the predicted class
        drifted += verdict.drifted
    assert drifted <= 3, f"{drifted} of 100 unshifted windows flagged"
    x, _, predicted, _ = traffic.sample(3000, np.random.default_rng(12))
    assert _feed(_monitor(traffic), x, predicted, 0, time.time()) == []


@pytest.mark.parametrize(
    ("name", "shift", "weights"),
    [
        ("noise", noise(0.1), None),
        ("rotation", rotation(20), None),
        ("inversion", inversion(0.5), None),
        ("class priors", None, prior_weights(0.5)),
    ],
)
def test_clear_shift_is_alerted_within_500_events(
    traffic: DigitsTraffic, name: str, shift: Shift | None, weights: np.ndarray | None
) -> None:
    monitor = _monitor(traffic)
    rng = np.random.default_rng(5)
    t0 = time.time()
    x, _, predicted, _ = traffic.sample(400, rng)
    assert _feed(monitor, x, predicted, 0, t0) == []
    x, _, predicted, _ = traffic.sample(500, rng, shift, weights)
    alerted = _feed(monitor, x, predicted, 400, t0)
    assert alerted, f"{name}: no alert within 500 shifted events"
    assert alerted[0] < 500


def test_class_prior_shift_moves_the_chi_square(traffic: DigitsTraffic, reference: Reference) -> None:
    x, _, predicted, _ = traffic.sample(300, np.random.default_rng(3), class_weights=prior_weights(1.0))
    verdict = evaluate_window(reference, x, [str(p) for p in predicted], DriftConfig())
    assert verdict is not None
    chi2 = [r for r in verdict.results if r.feature == "predicted_class" and r.test == "chi2"]
    assert chi2 and chi2[0].drifted and chi2[0].p_value < 1e-6


def test_effect_sizes_are_reported_per_feature(traffic: DigitsTraffic, reference: Reference) -> None:
    x, _, predicted, _ = traffic.sample(200, np.random.default_rng(4), shift=inversion(1.0))
    verdict = evaluate_window(reference, x, [str(p) for p in predicted], DriftConfig())
    assert verdict is not None and verdict.drifted and verdict.drifted_share > 0.5
    by_test = {(r.feature, r.test): r for r in verdict.results}
    assert by_test[("mean_intensity", "psi")].statistic > 1.0
    assert by_test[("mean_intensity", "wasserstein")].statistic > 3.0


def test_ks_matches_scipy_and_psi_is_zero_on_itself() -> None:
    rng = np.random.default_rng(0)
    ref_values = np.sort(rng.normal(size=600))
    counts, edges = np.histogram(ref_values, bins=20)
    col = ColumnReference("x", ref_values, edges, counts / counts.sum(), float(ref_values.std()))
    live = rng.normal(0.3, 1.0, size=200)
    d, p = ks_test(live, col)
    expected = stats.ks_2samp(live, ref_values, method="asymp")
    assert d == pytest.approx(expected.statistic)
    assert p == pytest.approx(expected.pvalue, rel=0.2)
    assert psi(ref_values, col) == pytest.approx(0.0, abs=1e-9)


def test_corrections() -> None:
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    assert reject(p, 0.05, "bonferroni").tolist() == [True] + [False] * 9
    assert reject(p, 0.05, "bh").tolist() == [True, True] + [False] * 8
    assert reject([0.01, 0.02, 0.03], 0.05, "bh").tolist() == [True, True, True]
    assert reject([], 0.05, "bh").tolist() == []


def test_too_small_a_window_is_not_tested(traffic: DigitsTraffic, reference: Reference) -> None:
    x, _, predicted, _ = traffic.sample(50, np.random.default_rng(1), shift=inversion(1.0))
    assert evaluate_window(reference, x, [str(p) for p in predicted], DriftConfig(min_samples=100)) is None


def test_policy_cooldown_is_per_version_and_within_a_budget() -> None:
    now = [1000.0]
    policy = RetrainPolicy(cooldown_s=600, budget=2, budget_period_s=3600, clock=lambda: now[0])
    assert policy.decide("digits", "1", 0.5).outcome == "sent"
    now[0] += 300
    assert policy.decide("digits", "1", 0.5).outcome == "cooldown"
    assert policy.decide("other", "1", 0.5).outcome == "sent"  # per model
    assert policy.decide("digits", "2", 0.5).outcome == "sent"  # a new version has its own cooldown
    now[0] += 400
    assert policy.decide("digits", "1", 0.5).outcome == "budget"  # two for digits in the last hour already
    now[0] += 3600
    assert policy.decide("digits", "1", 0.5).outcome == "sent"
    status = {(s.model, s.version): s for s in policy.status()}
    assert status[("digits", "1")].sent == 2
    assert status[("digits", "1")].suppressed == {"cooldown": 1, "budget": 1}
    assert "budget" in status[("digits", "1")].last_suppressed_reason


def test_a_small_stale_alert_cannot_lock_out_a_real_shift() -> None:
    """A false alarm's TrainRequest starts the cooldown; a drift several times larger still gets through."""
    now = [0.0]
    policy = RetrainPolicy(cooldown_s=3600, budget=6, budget_period_s=86400, escalation=2.0, clock=lambda: now[0])
    assert policy.decide("digits", "1", 0.02).outcome == "sent"  # one feature of 74 drifted
    now[0] += 60
    assert policy.decide("digits", "1", 0.03).outcome == "cooldown"
    assert policy.decide("digits", "1", 0.05).outcome == "cooldown"  # 2.5×, but three tests more is no new shift
    decision = policy.decide("digits", "1", 0.8)  # the real shift: most tests drift
    assert decision.outcome == "escalated" and decision.send and "grew from 2% to 80%" in decision.reason
    now[0] += 60
    assert policy.decide("digits", "1", 0.9).outcome == "cooldown"  # not 2x the 80% that caused the last


def test_policy_remembers_requests_sent_before_a_restart() -> None:
    now = [10_000.0]
    policy = RetrainPolicy(cooldown_s=600, budget=6, budget_period_s=3600, clock=lambda: now[0])
    policy.seed("digits", "3", sent_at=9_900.0, drifted_share=0.5)
    assert policy.decide("digits", "3", 0.6).outcome == "cooldown"
    assert policy.decide("digits", "4", 0.6).outcome == "sent"


def test_lasting_drift_alerts_repeatedly_but_retrains_once_per_cooldown(traffic: DigitsTraffic) -> None:
    monitor = _monitor(traffic)
    monitor.alert_repeat_s = 0.0
    x, _, predicted, _ = traffic.sample(1000, np.random.default_rng(8), shift=noise(0.2))
    retrains, alerts = [], []
    for i in range(0, 1000, 100):
        batch = [Prediction("digits", "1", x[j], str(predicted[j]), 1000.0 + j, f"e{j}") for j in range(i, i + 100)]
        _, a, r = monitor.observe(batch)
        alerts += a
        retrains += r
    assert len(alerts) >= 5
    assert len(retrains) == 1 and retrains[0].caused_by == alerts[0].event_id


def test_live_accuracy_joins_labels(traffic: DigitsTraffic) -> None:
    monitor = _monitor(traffic)
    x, y, predicted, _ = traffic.sample(100, np.random.default_rng(2))
    monitor.observe(
        [Prediction("digits", "1", x[i], str(predicted[i]), 1.0 + i, f"e{i}", example_id=f"x{i}") for i in range(100)]
    )
    assert all(monitor.label(f"x{i}", str(y[i])) for i in range(100))
    assert not monitor.label("never-predicted", "3")


def test_time_windows_follow_event_time() -> None:
    from services.monitor.windows import VersionWindows

    w = VersionWindows(size=1000, step=1000, span_s=10.0, step_s=5.0, time_max=1000)
    for i in range(30):  # one event a second, from t=100
        w.add(np.full(64, i / 30), str(i % 10), 100.0 + i, f"e{i}")
        if "time" in w.due():
            window = w.take("time")
            assert window.kind == "time"
            # the last 10 s of event time: events t-9 .. t (fewer while the stream is younger)
            assert len(window.features) == min(10, i + 1) and window.end_time == 100.0 + i
            assert window.last_event_id == f"e{i}"
    assert "count" not in w.due()


def test_time_windows_detect_a_shift_too(traffic: DigitsTraffic) -> None:
    monitor = _monitor(traffic)
    monitor.window_params = WindowParams(size=100_000, step=100_000, span_s=20.0, step_s=5.0)
    x, _, predicted, _ = traffic.sample(1500, np.random.default_rng(9), shift=rotation(30))
    # 20 predictions per second of event time: each time window holds 400
    batch = [Prediction("digits", "1", x[i], str(predicted[i]), 1000.0 + i / 20, f"e{i}") for i in range(1500)]
    outcomes, alerts, _ = monitor.observe(batch)
    assert outcomes and {o.window for o in outcomes} == {"time"}
    assert alerts and alerts[0].window == "time"
    # 20 s at 20 per second; drawn with replacement, so some inputs repeat and are tested once
    assert max(o.verdict.samples + o.verdict.duplicates for o in outcomes) == 400


def _column(name: str, values: np.ndarray) -> ColumnReference:
    """A column reference built the way the lake's profile builds it (levels kept when discrete)."""
    from services.profiles.reference import _column_profile

    return ColumnReference.from_profile(name, _column_profile(values))


def test_discrete_columns_get_a_test_valid_with_ties() -> None:
    """A pixel takes a handful of grey levels. The per-level chi-square keeps its nominal level under
    no change; Kolmogorov-Smirnov on the same tied data rejects far less often than it claims."""
    from services.monitor.statistics import level_test

    rng = np.random.default_rng(0)
    levels = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    probs = np.array([0.6, 0.1, 0.1, 0.1, 0.1])
    col = _column("pixel", rng.choice(levels, 2000, p=probs))
    assert col.discrete
    chi2_p, ks_p = [], []
    for _ in range(400):
        live = rng.choice(levels, 200, p=probs)
        chi2_p.append(level_test(live, col)[1])
        ks_p.append(ks_test(live, col)[1])
    chi2_rate, ks_rate = np.mean(np.array(chi2_p) < 0.05), np.mean(np.array(ks_p) < 0.05)
    assert 0.02 <= chi2_rate <= 0.09, chi2_rate
    assert ks_rate < chi2_rate / 2, (ks_rate, chi2_rate)
    # A real change of the level shares is found.
    shifted = rng.choice(levels, 200, p=[0.4, 0.1, 0.1, 0.1, 0.3])
    assert level_test(shifted, col)[1] < 1e-6


def test_a_value_the_reference_never_had_is_evidence_of_drift() -> None:
    """A corner pixel that was always blank now carries sensor noise."""
    from services.monitor.statistics import level_test

    col = _column("corner", np.zeros(1000))
    noisy = np.abs(np.random.default_rng(1).normal(0.0, 0.1, 200))
    _, p, _, excess = level_test(noisy, col)
    assert p < 1e-9 and excess > 1.0
    _, p_same, _, excess_same = level_test(np.zeros(200), col)
    assert p_same == 1.0 and excess_same == 0.0


def test_a_large_window_needs_an_effect_not_only_significance() -> None:
    """Over 20,000 predictions a small shift (a third of a standard deviation) is significant; it is not
    drift unless it is large."""
    rng = np.random.default_rng(2)
    col = _column("x", rng.normal(0.0, 1.0, 20_000))
    assert not col.discrete
    reference = Reference("s", 20_000, (col,), (), {})
    small = rng.normal(0.3, 1.0, (20_000, 1))
    verdict = evaluate_window(reference, small, [], DriftConfig(features="raw"))
    assert verdict is not None
    ks = verdict.decisions()[0]
    assert ks.p_value < 1e-4 and ks.effect < 0.3 and not verdict.drifted
    large = rng.normal(1.0, 1.0, (20_000, 1))
    assert evaluate_window(reference, large, [], DriftConfig(features="raw")).drifted


def test_repeated_inputs_are_tested_once(traffic: DigitsTraffic, reference: Reference) -> None:
    """Resending the same 60 images ten times is 60 inputs, too few to test, not 600."""
    x, _, predicted, _ = traffic.sample(60, np.random.default_rng(6), shift=inversion(1.0), replace=False)
    repeated = np.tile(x, (10, 1))
    labels = [str(p) for p in np.tile(predicted, 10)]
    assert evaluate_window(reference, repeated, labels, DriftConfig(min_samples=100)) is None
    verdict = evaluate_window(reference, repeated, labels, DriftConfig(min_samples=50))
    assert verdict is not None and verdict.samples == 60 and verdict.duplicates == 540 and verdict.drifted
    counted = evaluate_window(reference, repeated, labels, DriftConfig(min_samples=100, dedupe=False))
    assert counted is not None and counted.samples == 600


def test_subset_traffic_raises_no_alarm(traffic: DigitsTraffic, reference: Reference) -> None:
    """Traffic from part of the training distribution (a few writers; three classes at twice their
    share) is not a shift: no window is flagged."""
    rng = np.random.default_rng(13)
    weights = np.ones(10)
    weights[[0, 1, 2]] = 2.0
    flagged = 0
    for i in range(60):
        pool = traffic.writers_block((i % 4) * 450, 500)
        x, _, predicted, _ = traffic.sample(200, rng, pool=pool)
        flagged += evaluate_window(reference, x, [str(p) for p in predicted], DriftConfig()).drifted
        x, _, predicted, _ = traffic.sample(200, rng, class_weights=weights)
        flagged += evaluate_window(reference, x, [str(p) for p in predicted], DriftConfig()).drifted
    assert flagged <= 1, f"{flagged} of 120 subset windows flagged"
