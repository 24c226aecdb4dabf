"""Where a split tag sends invocations, as properties of the pure rules: every valid split
gives each version exactly its weight of the 100 buckets, keys fall evenly into the
buckets, and resolution picks the version of the invocation's (or routing key's) bucket.
Together they are the distribution claim: a version gets its weight's share of the
invocations. The API tier checks that the operator resolves each invocation by exactly
these rules (tests/api/test_split_routes.py); it no longer counts a thousand of them."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from kitaru.core.names import FLOW_MAX_LENGTH, FLOW_PATTERN
from kitaru.core.routing import BUCKETS, Split, pick_version, resolve, split_bucket
from kitaru.core.tagging import MAX_SPLIT, split_tag

from tests.unit.test_routing import Index

FLOWS = st.from_regex(FLOW_PATTERN, fullmatch=True).filter(lambda f: len(f) <= FLOW_MAX_LENGTH)
KEYS = st.text(min_size=1, max_size=256)
# The unit tier's budget: each property is tried on 50 examples.
EXAMPLES = settings(max_examples=50, deadline=None)


@st.composite
def splits(draw: st.DrawFn) -> Split:
    """A valid split: 2 to 16 versions whose weights (0 to 100 each) add up to 100."""
    count = draw(st.integers(min_value=2, max_value=MAX_SPLIT))
    versions = sorted(
        draw(st.lists(st.integers(1, 10_000), min_size=count, max_size=count, unique=True))
    )
    cuts = sorted(draw(st.lists(st.integers(0, BUCKETS), min_size=count - 1, max_size=count - 1)))
    bounds = [0, *cuts, BUCKETS]
    weights = [upper - lower for lower, upper in pairwise(bounds)]
    return tuple(zip(versions, weights, strict=True))


@EXAMPLES
@given(splits())
def test_each_version_gets_exactly_its_weight_of_the_buckets_in_version_order(
    split: Split,
) -> None:
    picked = [pick_version(split, bucket) for bucket in range(BUCKETS)]
    assert picked == [version for version, weight in split for _ in range(weight)]
    assert Counter(picked) == {version: weight for version, weight in split if weight}


@EXAMPLES
@given(FLOWS, KEYS)
def test_a_key_has_one_bucket_of_the_hundred_for_good(flow: str, key: str) -> None:
    bucket = split_bucket(flow, key)
    assert 0 <= bucket < BUCKETS
    assert split_bucket(flow, key) == bucket


def test_keys_fall_evenly_into_the_buckets() -> None:
    """Pearson's chi-square over the 100 buckets of 20 000 names, for a few flows, below
    the 99.99th percentile of its distribution (99 degrees of freedom: 157): the buckets
    are uniform, so a version's share of invocations is its weight."""
    keys = 20_000
    expected = keys / BUCKETS
    for flow in ("agent", "research_agent", "f"):
        counts = Counter(split_bucket(flow, f"{flow}-{i:05x}") for i in range(keys))
        chi_square = sum((counts[b] - expected) ** 2 / expected for b in range(BUCKETS))
        assert chi_square < 157, (flow, chi_square)


@EXAMPLES
@given(FLOWS, splits(), KEYS, st.lists(KEYS, min_size=1, max_size=3))
def test_resolution_picks_the_bucket_of_the_invocation_or_its_routing_key(
    flow: str, split: Split, key: str, invocations: list[str]
) -> None:
    route = split_tag(None, flow, "stable", dict(split))
    lookup = Index({flow: {version for version, _ in split}}, {(flow, "stable"): route})
    for invocation in invocations:
        by_name = resolve(lookup, flow, "stable", invocation=invocation)
        assert by_name.split is not None and not by_name.split.sticky
        assert by_name.split.bucket == split_bucket(flow, invocation)
        assert by_name.version == pick_version(split, by_name.split.bucket)
        keyed = resolve(lookup, flow, "stable", routing_key=key, invocation=invocation)
        assert keyed.split is not None and keyed.split.sticky
        assert keyed.split.bucket == split_bucket(flow, key)
        assert keyed.version == pick_version(split, split_bucket(flow, key))
