"""The topic index against the plain definition: every pattern checked with ``matches``."""

from __future__ import annotations

import random

from modules.eventbus.topics import TopicIndex, matches

# A small alphabet makes shared prefixes, exact hits and near misses (``user.`` vs
# ``user.*``) common among random names.
ALPHABET = "ab.-"


def naive(subscriptions: list[tuple[str, str, int]], topic: str) -> tuple[str, ...]:
    """What the index must answer: matching items, by insertion number."""
    found = [(rank, item) for pattern, item, rank in subscriptions if matches(pattern, topic)]
    return tuple(item for _, item in sorted(found))


def random_name(rng: random.Random, longest: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, longest)))


def random_pattern(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        return "*"
    if roll < 0.55:
        return random_name(rng, 5) + "*"
    return random_name(rng, 6)


def test_index_agrees_with_a_scan_of_every_pattern() -> None:
    rng = random.Random(20261201)
    checked = 0
    for _ in range(60):
        index: TopicIndex[str] = TopicIndex()
        subscriptions: list[tuple[str, str, int]] = []  # (pattern, item, insertion number)
        counter = 0
        for step in range(300):
            if subscriptions and rng.random() < 0.3:
                pattern, item, _ = subscriptions.pop(rng.randrange(len(subscriptions)))
                assert index.remove(pattern, item)
                assert not index.remove(pattern, item)
            else:
                pattern = random_pattern(rng)
                item = f"s{rng.randrange(40)}"  # the same item under several patterns
                before = [s for s in subscriptions if (s[0], s[1]) == (pattern, item)]
                for old in before:  # re-adding moves the item to the end
                    subscriptions.remove(old)
                subscriptions.append((pattern, item, counter))
                counter += 1
                index.add(pattern, item)
            if step % 10 == 0:
                for _ in range(20):
                    topic = random_name(rng, 8)
                    assert index.resolve(topic) == naive(subscriptions, topic), topic
                    assert index.resolve(topic) == naive(subscriptions, topic), "cached"
                    checked += 1
        assert len(index) == len(subscriptions)
        assert sorted(index.patterns()) == sorted({p for p, _, _ in subscriptions})
        assert sorted(index.items()) == sorted(item for _, item, _ in subscriptions)
    assert checked > 10_000


def test_edge_cases_of_prefix_patterns() -> None:
    index: TopicIndex[str] = TopicIndex()
    index.add("user.*", "users")
    index.add("*", "all")
    index.add("user", "exact")
    assert index.resolve("user") == ("all", "exact")  # `user.*` does not match `user`
    assert index.resolve("user.") == ("all",)  # nor `user.`: the prefix must be proper
    assert index.resolve("user.a") == ("users", "all")
    assert index.resolve("user.a.b") == ("users", "all")
    assert index.resolve("") == ()  # no topic is empty; `*` matches every topic
    assert index.remove("*", "all")
    assert index.resolve("order.x") == ()
    index.add("*", "all")
    assert index.resolve("order.x") == ("all",)


def test_one_item_keeps_the_place_of_its_latest_insertion() -> None:
    index: TopicIndex[str] = TopicIndex()
    index.add("a.*", "x")
    index.add("a.*", "y")
    index.add("a.*", "x")
    assert index.resolve("a.b") == ("y", "x")
    index.add("*", "z")
    index.add("a.*", "y")
    assert index.resolve("a.b") == ("x", "z", "y")
