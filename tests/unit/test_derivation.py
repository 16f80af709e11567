from decimal import Decimal

import pytest
from headroom.core.derivation import (
    DEFAULT_MINIMUM,
    Derivation,
    DerivationError,
    default_minimum,
    derive,
    derive_namespace,
)
from headroom.core.quantity import GI, MI, format_quantity, parse_quantity

D = Decimal
Q = parse_quantity


@pytest.mark.parametrize(
    ("resource", "peak", "percent", "expected_text"),
    [
        ("requests.cpu", "3.3", 20, "3960m"),
        ("limits.cpu", "3.3", 20, "3960m"),
        ("requests.cpu", "1", 20, "1200m"),
        ("requests.cpu", "10", 0, "10"),
        ("requests.cpu", "10", 50, "15"),
        ("requests.cpu", "0.0011", 20, "2m"),  # 1.32m rounds up to a whole millicore
        ("requests.cpu", "2.5", 100, "5"),
        ("requests.memory", "1000Mi", 20, "1200Mi"),
        ("limits.memory", "1Gi", 20, "1229Mi"),  # 1228.8Mi rounds up to 1229Mi
        ("limits.memory", "10Gi", 20, "12Gi"),
        ("requests.memory", "1", 20, "1Mi"),
        ("pods", "7", 20, "9"),  # 8.4 rounds up
        ("pods", "10", 20, "12"),
        ("pods", "5", 0, "5"),
        ("count/secrets", "1", 20, "2"),
    ],
)
def test_peak_plus_headroom_rounded_up(resource: str, peak: str, percent: int, expected_text: str) -> None:
    result = derive(resource, Q(peak), percent, D(0), None)
    assert result.recommended == Q(expected_text)
    assert format_quantity(result.recommended, resource) == expected_text
    assert result.with_headroom == result.recommended
    assert result.reason == f"peak+{percent}%"


def test_derivation_records_every_input() -> None:
    result = derive("requests.cpu", D("3.3"), 20, D(1), D("2.5"))
    assert result == Derivation(
        resource="requests.cpu",
        peak=D("3.3"),
        headroom_percent=D(20),
        with_headroom=D("3.96"),
        floor=D(1),
        used=D("2.5"),
        recommended=D("3.96"),
        reason="peak+20%",
    )


def test_fractional_headroom_percent() -> None:
    result = derive("requests.cpu", D(2), D("12.5"), D(0), None)
    assert result.recommended == D("2.25")
    assert result.reason == "peak+12.5%"


def test_minimum_wins_over_small_peak() -> None:
    result = derive("requests.cpu", D("0.2"), 20, D(1), D("0.1"))
    assert result.recommended == D(1)
    assert result.with_headroom == D("0.24")
    assert result.reason == "minimum"


def test_current_use_wins_when_above_peak_and_floor() -> None:
    # Use can exceed the lookback peak when the history has not caught up yet.
    result = derive("requests.cpu", D(2), 20, D(1), D("3.0004"))
    assert result.recommended == D("3.001")
    assert result.reason == "current use"


def test_current_use_memory_rounds_up_to_whole_mi() -> None:
    result = derive("requests.memory", D(0), 20, D(0), MI * 5 + 1)
    assert result.recommended == MI * 6
    assert result.reason == "current use"


def test_tie_is_attributed_to_headroom() -> None:
    result = derive("pods", D(10), 20, D(12), D(12))
    assert result.recommended == D(12)
    assert result.reason == "peak+20%"


def test_tie_between_floor_and_use_is_attributed_to_floor() -> None:
    result = derive("pods", D(1), 20, D(5), D(5))
    assert result.reason == "minimum"


@pytest.mark.parametrize(
    ("used", "expected", "reason"),
    [
        (None, D(10), "no history: minimum"),
        (D(3), D(10), "no history: minimum"),
        (D(10), D(10), "no history: minimum"),
        (D(14), D(14), "no history: current use"),
        (D("14.2"), D(15), "no history: current use"),
    ],
)
def test_no_history(used: Decimal | None, expected: Decimal, reason: str) -> None:
    result = derive("pods", None, 20, D(10), used)
    assert result.peak is None
    assert result.with_headroom is None
    assert result.recommended == expected
    assert result.reason == reason


def test_zero_peak_is_history_not_absence() -> None:
    result = derive("pods", D(0), 20, D(10), None)
    assert result.peak == D(0)
    assert result.with_headroom == D(0)
    assert result.reason == "minimum"


@pytest.mark.parametrize(
    ("peak", "percent", "floor", "used", "message"),
    [
        (D(-1), 20, D(1), None, "peak -1 is negative"),
        (D(1), -5, D(1), None, "headroom percent -5 is negative"),
        (D(1), 20, D(-1), None, "minimum -1 is negative"),
        (D(1), 20, D(1), D("-0.5"), "current use -0.5 is negative"),
        (D("NaN"), 20, D(1), None, "peak .* is not a finite Decimal"),
        (D(1), 20, D("Infinity"), None, "minimum .* is not a finite Decimal"),
        (1.5, 20, D(1), None, "peak 1.5 is not a finite Decimal"),
        (D(1), True, D(1), None, "headroom percent True is not a number"),
        (D(1), 20.0, D(1), None, "headroom percent 20.0 is not a number"),
    ],
)
def test_invalid_inputs_raise_with_clear_messages(
    peak: Decimal, percent: int, floor: Decimal, used: Decimal | None, message: str
) -> None:
    with pytest.raises(DerivationError, match=message) as caught:
        derive("requests.cpu", peak, percent, floor, used)
    assert str(caught.value).startswith("requests.cpu: ")


def test_default_minimum() -> None:
    assert {
        "requests.cpu": D(1),
        "requests.memory": GI,
        "limits.cpu": D(2),
        "limits.memory": 2 * GI,
        "pods": D(10),
        "requests.ephemeral-storage": 10 * GI,
        "limits.ephemeral-storage": 20 * GI,
        "requests.storage": 100 * GI,
        "persistentvolumeclaims": D(10),
        "services": D(10),
        "configmaps": D(50),
        "secrets": D(50),
    } == DEFAULT_MINIMUM
    assert default_minimum("limits.memory") == Q("2Gi")
    # Meaningful in its unit: never 1 byte of storage or 1 object.
    assert default_minimum("count/jobs.batch") == D(10)
    assert default_minimum("gold.storageclass.storage.k8s.io/requests.storage") == 10 * GI


def test_a_floor_fits_one_container_that_relies_on_the_limitrange_defaults() -> None:
    # The search sample: ephemeral-storage requested 1Gi by default, no history, no minimum.
    container = {"requests.ephemeral-storage": 20 * GI, "limits.memory": 3 * GI}
    results = derive_namespace(
        ["requests.ephemeral-storage", "limits.memory", "requests.cpu"], {}, {}, 20, {}, container
    )
    assert results["requests.ephemeral-storage"].recommended == 20 * GI
    assert results["limits.memory"].recommended == 3 * GI
    assert results["requests.cpu"].recommended == D(1)


def test_limits_are_never_below_the_requests_beside_them() -> None:
    results = derive_namespace(
        ["requests.memory", "limits.memory", "limits.cpu"], {"requests.memory": 50 * GI}, {}, 4, {}
    )
    assert results["limits.memory"].recommended == 52 * GI  # not the 2Gi floor
    assert results["limits.memory"].reason == "at least requests.memory"
    assert results["limits.cpu"].recommended == D(2)  # no requests.cpu governed: its own floor


def test_derive_namespace_uses_spec_minimum_then_default() -> None:
    resources = ["requests.cpu", "requests.memory", "limits.cpu", "pods", "services"]
    results = derive_namespace(
        resources,
        peaks={"requests.cpu": D("3.3"), "requests.memory": Q("1000Mi"), "pods": D(7), "services": None},
        used={"requests.cpu": D(2), "services": D(30)},
        headroom_percent=20,
        minimum={"requests.cpu": D(5)},
    )
    assert list(results) == resources
    assert results["requests.cpu"].recommended == D(5)
    assert results["requests.cpu"].reason == "minimum"
    assert results["requests.memory"].recommended == Q("1200Mi")
    assert results["requests.memory"].floor == GI
    assert results["limits.cpu"].peak is None
    assert results["limits.cpu"].recommended == D(5)  # its floor is 2, but requests.cpu is 5
    assert results["limits.cpu"].reason == "at least requests.cpu"
    assert results["pods"].recommended == D(10)  # 9 from the peak, but the default floor is 10
    assert results["services"].recommended == D(30)
    assert results["services"].reason == "no history: current use"


def test_derive_namespace_with_no_resources() -> None:
    assert derive_namespace([], {}, {}, 20, {}) == {}


def test_gpus_are_whole_and_have_no_floor() -> None:
    """3.1 GPUs at peak is 3.72 with headroom: 4 whole GPUs. Without history a namespace gets none:
    a floor would hand out devices nobody used (it gets what runs now, or asks)."""
    from headroom.core.derivation import default_minimum, derive

    gpu = "requests.nvidia.com/gpu"
    assert derive(gpu, Decimal("3.1"), 20, default_minimum(gpu), Decimal(2)).recommended == Decimal(4)
    assert derive(gpu, None, 20, default_minimum(gpu), None).recommended == Decimal(0)
    assert derive(gpu, None, 20, default_minimum(gpu), Decimal(1)).recommended == Decimal(1)
    assert default_minimum("requests.hugepages-2Mi") == 0
    # Storage classes and object counts keep their floors, as the other storage and counts do.
    assert default_minimum("gold.storageclass.storage.k8s.io/requests.storage") > 0
    assert default_minimum("services.loadbalancers") == 10


def test_a_quotas_bare_cpu_and_memory_have_the_floors_of_their_requests() -> None:
    from headroom.core.derivation import default_minimum

    for bare in ("cpu", "memory", "ephemeral-storage"):
        assert default_minimum(bare) == default_minimum(f"requests.{bare}")
