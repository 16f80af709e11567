import random
from decimal import Decimal

import pytest
from headroom.core.quantity import (
    GI,
    KI,
    MI,
    QuantityError,
    canonical,
    format_percent,
    format_quantity,
    format_together,
    parse_quantity,
    resource_kind,
    round_up,
)

D = Decimal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", D(1)),
        ("0", D(0)),
        ("0.5", D("0.5")),
        ("+1", D(1)),
        ("-1", D(-1)),
        ("-0", D(0)),
        ("1.", D(1)),
        (".5", D("0.5")),
        ("+.5", D("0.5")),
        ("1e3", D(1000)),
        ("1E3", D(1000)),
        ("1e+3", D(1000)),
        ("1E-3", D("0.001")),
        ("1.5e-3", D("0.0015")),
        ("5n", D("0.000000005")),
        ("5u", D("0.000005")),
        ("500m", D("0.5")),
        ("1000m", D(1)),
        ("1500m", D("1.5")),
        ("1k", D(1000)),
        ("1M", D(10**6)),
        ("1G", D(10**9)),
        ("1T", D(10**12)),
        ("1P", D(10**15)),
        ("1E", D(10**18)),
        ("1Ki", D(1024)),
        ("1Mi", D(1024**2)),
        ("1Gi", D(1024**3)),
        ("1Ti", D(1024**4)),
        ("1Pi", D(1024**5)),
        ("1Ei", D(1024**6)),
        ("1.5Gi", D(1610612736)),
        ("0.5Ki", D(512)),
        ("128Mi", D(134217728)),
        ("0.1", D("0.1")),
        (0, D(0)),
        (10, D(10)),
        (D("1.50"), D("1.5")),
    ],
)
def test_parse_quantity_is_exact(text: str | int | Decimal, expected: Decimal) -> None:
    value = parse_quantity(text)
    assert value == expected
    assert isinstance(value, Decimal)


@pytest.mark.parametrize(("text", "digits"), [("1000m", "1"), ("1e3", "1000"), ("0.50", "0.5"), ("1Ki", "1024")])
def test_parsed_values_have_plain_representation(text: str, digits: str) -> None:
    assert str(parse_quantity(text)) == digits


def test_tenth_of_a_core_is_not_a_float() -> None:
    assert parse_quantity("0.1") + parse_quantity("0.2") == parse_quantity("0.3")


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "Gi",
        "m",
        "5 Gi",
        " 5Gi",
        "5Gi ",
        "5Gi\n",
        "1.2.3",
        "1..2",
        ".",
        "+",
        "-",
        "abc",
        "1e",
        "1e3.5",
        "1e3Gi",
        "1Gb",
        "1gi",
        "1K",
        "1Kib",
        "0x10",
        "1_000",
        "1,5",
        "nan",
        "NaN",
        "inf",
        "Infinity",
        "\u0661",  # Arabic-Indic digit one: Python's int() accepts it, Kubernetes does not
        "1e99999",
        "1e40",
        "1e-40",
        "9" * 65,
    ],
)
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


@pytest.mark.parametrize("value", [True, False, 0.5, 1.0, None, [1], {"cpu": 1}, D("NaN"), D("Infinity"), 10**40])
def test_parse_quantity_rejects_non_quantities(value: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(value)  # type: ignore[arg-type]


def test_error_message_names_the_bad_text() -> None:
    with pytest.raises(QuantityError, match=r'"5 Gi" is not a Kubernetes quantity') as caught:
        parse_quantity("5 Gi")
    assert caught.value.text == "5 Gi"
    assert isinstance(caught.value, ValueError)


def test_empty_string_message_is_understandable() -> None:
    with pytest.raises(QuantityError, match="empty string is not a quantity"):
        parse_quantity("")


def test_float_message_suggests_quoting() -> None:
    with pytest.raises(QuantityError, match=r'floating-point.*"0.5"'):
        parse_quantity(0.5)  # type: ignore[arg-type]


def test_boolean_message() -> None:
    with pytest.raises(QuantityError, match="True is a boolean"):
        parse_quantity(True)


@pytest.mark.parametrize(
    ("resource", "kind"),
    [
        ("cpu", "cpu"),
        ("requests.cpu", "cpu"),
        ("limits.cpu", "cpu"),
        ("memory", "memory"),
        ("requests.memory", "memory"),
        ("limits.memory", "memory"),
        ("ephemeral-storage", "memory"),
        ("requests.ephemeral-storage", "memory"),
        ("limits.ephemeral-storage", "memory"),
        ("requests.storage", "memory"),
        ("gold.storageclass.storage.k8s.io/requests.storage", "memory"),
        ("hugepages-2Mi", "memory"),
        ("requests.hugepages-1Gi", "memory"),
        ("limits.hugepages-2Mi", "memory"),
        ("pods", "count"),
        ("services", "count"),
        ("count/deployments.apps", "count"),
        ("persistentvolumeclaims", "count"),
        ("gold.storageclass.storage.k8s.io/persistentvolumeclaims", "count"),
        ("requests.nvidia.com/gpu", "count"),
        ("cpus", "count"),
    ],
)
def test_resource_kind(resource: str, kind: str) -> None:
    assert resource_kind(resource) == kind


@pytest.mark.parametrize(
    ("value", "resource", "expected"),
    [
        (D("3.96"), "requests.cpu", D("3.96")),
        (D("3.9601"), "requests.cpu", D("3.961")),
        (D("0.0000001"), "limits.cpu", D("0.001")),
        (D("2"), "cpu", D("2")),
        (D("0"), "requests.cpu", D("0")),
        (D("1"), "requests.memory", MI),
        (MI, "requests.memory", MI),
        (MI + 1, "requests.memory", 2 * MI),
        (D("1200") * MI, "limits.memory", D("1200") * MI),
        (D(10**9), "requests.memory", D(954) * MI),
        (D("0.5"), "requests.ephemeral-storage", MI),
        (D("8.4"), "pods", D(9)),
        (D("8"), "pods", D(8)),
        (D("0.0001"), "count/secrets", D(1)),
        (D("-1.5"), "pods", D(-1)),
    ],
)
def test_round_up(value: Decimal, resource: str, expected: Decimal) -> None:
    assert round_up(value, resource) == expected


@pytest.mark.parametrize("value", [D("NaN"), D("Infinity"), D("-Infinity")])
def test_round_up_rejects_non_finite(value: Decimal) -> None:
    with pytest.raises(QuantityError):
        round_up(value, "requests.cpu")


@pytest.mark.parametrize(
    ("value", "resource", "text"),
    [
        (D(2), "requests.cpu", "2"),
        (D("2.000"), "requests.cpu", "2"),
        (D("1.5"), "requests.cpu", "1500m"),
        (D("0.1"), "limits.cpu", "100m"),
        (D("3.96"), "limits.cpu", "3960m"),
        (D("0.0000005"), "cpu", "500n"),
        (D("0.0000000005"), "cpu", "0.0000000005"),
        (D(0), "cpu", "0"),
        (D("-0.5"), "cpu", "-500m"),
        (GI, "requests.memory", "1Gi"),
        (2 * GI, "limits.memory", "2Gi"),
        (1024 * GI, "limits.memory", "1024Gi"),
        (1200 * MI, "requests.memory", "1200Mi"),
        (128 * MI, "memory", "128Mi"),
        (1536 * MI, "memory", "1536Mi"),
        (KI * 3, "memory", "3Ki"),
        (D(1000), "memory", "1000"),
        (D(10**9), "memory", "1000000000"),
        (D("0.5"), "memory", "0.5"),
        (D(0), "memory", "0"),
        (-GI, "memory", "-1Gi"),
        (D(10), "pods", "10"),
        (D("10.0"), "pods", "10"),
        (D("1.5"), "count/secrets", "1.5"),
        (D(1000), "services", "1000"),
    ],
)
def test_format_quantity(value: Decimal, resource: str, text: str) -> None:
    assert format_quantity(value, resource) == text
    assert parse_quantity(text) == value


def test_format_quantity_round_trips_for_many_values() -> None:
    rng = random.Random(20260101)
    resources = ["requests.cpu", "limits.memory", "pods", "requests.ephemeral-storage"]
    scales = [D(1), D("0.001"), D("1e-9"), KI, MI, GI, D("0.1"), D("1e-12")]
    for _ in range(2000):
        value = D(rng.randint(-(10**7), 10**7)) * rng.choice(scales)
        for resource in resources:
            text = format_quantity(value, resource)
            assert parse_quantity(text) == value, (value, resource, text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (D(1), "1"),
        (D("1.000"), "1"),
        (D("1E+3"), "1000"),
        (D("0.50"), "0.5"),
        (D("1073741824"), "1073741824"),
        (D("0"), "0"),
        (D("-0"), "0"),
        (D("0.000"), "0"),
        (D("5E-9"), "0.000000005"),
        (D("-2.50"), "-2.5"),
    ],
)
def test_canonical(value: Decimal, text: str) -> None:
    assert canonical(value) == text


@pytest.mark.parametrize(
    ("a", "b"), [("1", "1000m"), ("1Ki", "1024"), ("1k", "1e3"), ("0.5", "500m"), ("1Gi", "1024Mi")]
)
def test_canonical_identifies_equal_amounts(a: str, b: str) -> None:
    assert canonical(parse_quantity(a)) == canonical(parse_quantity(b))


def test_unit_constants() -> None:
    assert (D(1024), D(1048576), D(1073741824)) == (KI, MI, GI)


# ------------------------------------------------------------------------------------- for people


@pytest.mark.parametrize(
    ("values", "resource", "expected"),
    [
        # One unit on both sides of "X of Y": never "4 of 4800m" or "900m of 1".
        ([D(4), D("4.8")], "requests.cpu", ["4000m", "4800m"]),
        ([D("0.9"), D(1)], "limits.cpu", ["900m", "1000m"]),
        ([D(4), D(5)], "requests.cpu", ["4", "5"]),
        ([D(0), D("0.5")], "requests.cpu", ["0", "500m"]),
        # Memory in the largest binary unit that keeps both exact: 2516582400 bytes is 2400Mi.
        ([D(2516582400), D(2400) * MI], "requests.memory", ["2400Mi", "2400Mi"]),
        ([D(1536) * MI, D(2) * GI], "limits.memory", ["1536Mi", "2048Mi"]),
        ([D(3) * GI, D(4) * GI], "requests.memory", ["3Gi", "4Gi"]),
        # A raw byte peak that no unit holds exactly: rounded and marked, in the unit of its neighbours.
        ([D(1234567890), D(1413) * MI], "requests.memory", ["~1177.4Mi", "1413Mi"]),
        ([None, D(7)], "pods", ["-", "7"]),
    ],
)
def test_values_read_side_by_side_share_one_unit(values: list[D | None], resource: str, expected: list[str]) -> None:
    assert format_together(values, resource) == expected


def test_exact_values_shown_together_parse_back() -> None:
    for values, resource in (([D(4), D("4.8")], "requests.cpu"), ([D(1536) * MI, D(2) * GI], "limits.memory")):
        assert [parse_quantity(t) for t in format_together(values, resource)] == values


@pytest.mark.parametrize(
    ("percent", "expected"),
    [
        (D("83.33333333333333333333333333"), "83.3%"),
        (D("89.74"), "89.7%"),
        (D(80), "80%"),
        (D("80.0"), "80%"),
        (D("1E+2"), "100%"),
        (None, "unknown"),
    ],
)
def test_percent_is_short(percent: D | None, expected: str) -> None:
    assert format_percent(percent) == expected


def test_hugepages_round_up_to_whole_pages_and_devices_to_whole_units() -> None:
    from headroom.core.quantity import round_up

    assert round_up(Decimal(5 * 2**20), "hugepages-2Mi") == 6 * 2**20
    assert round_up(Decimal(1), "requests.hugepages-1Gi") == 2**30
    assert round_up(Decimal("3.01"), "requests.nvidia.com/gpu") == 4
    assert round_up(Decimal("1.5"), "gold.storageclass.storage.k8s.io/persistentvolumeclaims") == 2
