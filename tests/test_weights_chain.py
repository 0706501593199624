"""Who feeds whom in `weights sync`, as data: nodes put into chains (`--chains N`, `--star`),
each chain's first node reading the staging itself or fed by the head, and a chain re-formed
around a node that fails. No cluster: the chain is the model `transfer` carries out."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from clusterprep.weights import chain


@dataclass(eq=False)
class Node:
    name: str
    running: bool = True
    upstream: Node | None = None
    downstream: Node | None = None


def form(names: str, count: int, readers: str = "") -> tuple[dict[str, Node], list[list[Node]]]:
    """The chains as the transfer forms them: planned, then each node joined to the next."""
    nodes = {name: Node(name) for name in names}
    chains = chain.plan(list(nodes.values()), count, lambda node: node.name in readers)
    for members in chains:
        for upstream, downstream in zip(members, members[1:]):
            chain.join(upstream, downstream)
    return nodes, chains


def fed_by(nodes: dict[str, Node], readers: str = "") -> dict[str, str]:
    """Each node's source: the node before it, or "staging" (it reads it itself), or "head"."""
    sources = {}
    for name, node in nodes.items():
        source = chain.source(node, lambda n: n.name in readers)
        sources[name] = source.name if isinstance(source, Node) else source
    return sources


@pytest.mark.parametrize("nodes_in_order, count, readers, chains", [
    ("abcd", 1, "abcd", ["abcd"]),
    ("abcde", 2, "abcde", ["abc", "de"]),
    ("abcde", 2, "bd", ["bac", "de"]),  # each chain led by a node that reads the staging
    ("abc", 1, "", ["abc"]),            # none does: the head sends to the first
    ("abc", 9, "", ["a", "b", "c"]),    # never more chains than nodes: a star
])
def test_nodes_split_into_consecutive_chains_each_led_by_a_staging_reader(
        nodes_in_order, count, readers, chains):
    _, planned = form(nodes_in_order, count, readers)
    assert ["".join(n.name for n in members) for members in planned] == chains


def test_star_gives_every_node_that_needs_files_its_own_chain():
    count = chain.chain_count(wanting=4, chains=1, star=True)
    _, planned = form("abcd", count)
    assert [[n.name for n in members] for members in planned] == [["a"], ["b"], ["c"], ["d"]]
    assert chain.mode([[n.name for n in members] for members in planned]) == chain.STAR
    assert chain.chain_count(wanting=4, chains=2, star=False) == 2
    assert chain.mode([["a", "b"], ["c", "d"]]) == chain.CHAINS
    assert chain.mode([["a", "b", "c"]]) == chain.CHAIN
    assert chain.mode([]) is None  # nothing had to move


def test_the_first_node_reads_the_staging_when_it_sees_it_else_the_head_sends():
    nodes, _ = form("abc", 1, readers="b")
    assert fed_by(nodes, readers="b") == {"b": "staging", "a": "b", "c": "a"}
    nodes, _ = form("abc", 1)
    assert fed_by(nodes) == {"a": "head", "b": "a", "c": "b"}


def test_a_node_failing_mid_chain_is_passed_over_by_the_node_before_it():
    nodes, _ = form("abcd", 1)
    nodes["b"].running = False
    reform = chain.leave(nodes["b"], lambda n: n.running)
    assert reform.link == (nodes["a"], nodes["c"]) and reform.fed is None
    chain.join(*reform.link)  # the transfer links them (a tells c's listener its position)
    assert fed_by({k: v for k, v in nodes.items() if k != "b"}) == {"a": "head", "c": "a",
                                                                       "d": "c"}
    assert nodes["b"].upstream is None and nodes["b"].downstream is None


def test_a_failed_node_whose_predecessor_is_gone_too_leaves_the_next_one_to_the_source():
    nodes, _ = form("abcd", 1, readers="abcd")
    nodes["b"].running = False  # b ended; c fails before b was cut
    reform = chain.leave(nodes["c"], lambda n: n.running)
    assert reform.link is None and reform.fed is nodes["d"]
    assert fed_by({"d": nodes["d"]}, readers="abcd") == {"d": "staging"}


def test_the_first_node_failing_leaves_the_second_fed_by_the_source():
    nodes, _ = form("abc", 1)
    reform = chain.leave(nodes["a"], lambda n: n.running)
    assert reform.fed is nodes["b"] and reform.link is None and reform.last is None
    assert fed_by({"b": nodes["b"], "c": nodes["c"]}) == {"b": "head", "c": "b"}


def test_the_last_node_failing_makes_the_one_before_it_last():
    nodes, _ = form("abc", 1)
    reform = chain.leave(nodes["c"], lambda n: n.running)
    assert reform.last is nodes["b"] and reform.link is None and reform.fed is None
    assert nodes["b"].downstream is None


def test_a_node_alone_in_its_chain_leaves_nothing_to_re_form():
    nodes, _ = form("ab", 2)
    assert chain.leave(nodes["a"], lambda n: n.running) == chain.Reform()


def test_a_broken_link_splits_the_chain_and_the_second_part_reads_the_source():
    nodes, _ = form("abcd", 1, readers="c")
    # c read the staging as the chain's leader: the chain is c, a, b, d
    assert fed_by(nodes, readers="c") == {"c": "staging", "a": "c", "b": "a", "d": "b"}
    assert chain.split(nodes["a"]) is nodes["b"]
    assert fed_by(nodes, readers="c") == {"c": "staging", "a": "c", "b": "head", "d": "b"}
    assert chain.split(nodes["d"]) is None  # nothing after the last node
