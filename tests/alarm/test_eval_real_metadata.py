"""The real MMAU test-mini and MMAR metadata (tests/data/benchmarks): both files pass validation, and a response
naming each option in turn, filled and scored, marks exactly that option correct, except where the official rule
itself also accepts another option. All those exceptions have one reason: the option is made of exactly the
answer's words in another order ("From near to far" vs "From far to near"), and the official string match
compares sets of words, so it cannot tell them apart."""
import copy
from pathlib import Path

import pytest

from alarm.eval.benchmarks import fill_item, get_benchmark, load_items, score, words

DATA = Path(__file__).resolve().parents[1] / "data" / "benchmarks"

# (item id, index of an option that is not the answer but that the official rule accepts)
ACCEPTED_WRONG_OPTIONS = {
    "mmau": [
        ("bbabe360-0573-43d4-b2e6-6892150cbdcd", 1),
        ("bbabe360-0573-43d4-b2e6-6892150cbdcd", 2),
        ("bbabe360-0573-43d4-b2e6-6892150cbdcd", 3),
        ("004fd9c5-1f2b-4c16-939b-4c75e39c84ba", 0),
        ("40c9c875-1922-4e1e-adc9-076432418a02", 1),
        ("8cbc0f29-4cf5-41e6-83ff-abcd70fbd96d", 1),
        ("4e96cbe1-bf9a-4b47-b5eb-63ff69cd97c2", 2),
        ("35330c05-c50f-4f30-80b1-263c61357866", 0),
        ("42e35733-9630-4960-9ce0-75325e5906f6", 0),
        ("42e35733-9630-4960-9ce0-75325e5906f6", 1),
        ("e6e02fec-0241-40d6-a0f5-7d79d60b9649", 2),
        ("7fa63d67-5d84-4f56-b5c4-9b26c4cf9d26", 2),
    ],
    "mmar": [
        ("SHM5MV3oLCk_00-00-00_00-00-15", 1),
        ("BV1pr421M7A6_00-00-06_00-00-10", 3),
        ("1haxFVCxSJI_00-00-00_00-00-05", 1),
        ("1haxFVCxSJI_00-00-00_00-00-03", 1),
        ("BBvC5vS10aA_00-03-46_00-04-16", 1),
        ("BBvC5vS10aA_00-03-46_00-04-16", 2),
        ("BBvC5vS10aA_00-03-46_00-04-16", 3),
        ("BV12u411G7TJ_00-00-00_00-00-20", 3),
        ("Z8nnssMvvG4_00-00-00_00-00-07", 0),
        ("zar3EpCxKr0_00-01-05_00-01-27", 1),
        ("zar3EpCxKr0_00-01-05_00-01-27", 2),
        ("zar3EpCxKr0_00-01-05_00-01-27", 3),
        ("qj_fqQDlboQ_00-00-00_00-00-13", 1),
        ("k0Xer0v2ffk_00-00-12_00-00-36", 0),
        ("BV1zso1YkENT_00-00-00_00-00-14", 0),
        ("onaBflJCwuI_00-00-27_00-00-57", 2),
        ("pRgr18CWiFE_00-00-00_00-00-24", 0),
        ("BV11yrkYME4G_00-03-53_00-04-00", 0),
        ("BV1pp421S7fs_00-04-30_00-04-38", 2),
        ("BV13j421S7Fo_00-00-29_00-00-59", 0),
        ("BV13j421S7Fo_00-00-29_00-00-59", 1),
        ("BV1Lx4y1b7w9_00-00-10_00-00-40", 1),
        ("BV1Lx4y1b7w9_00-00-10_00-00-40", 2),
        ("BV1Lx4y1b7w9_00-00-10_00-00-40", 3),
        ("z6uZAmdg9rU_00-00-00_00-00-19", 3),
        ("BV1GH4y1p7vE_00-01-00_00-01-26", 3),
        ("BV1KmRMYLEBa_0-00_0-30", 0),
        ("BV1KmRMYLEBa_0-00_0-30", 2),
    ],
}


@pytest.mark.parametrize("name, filename", [("mmau", "mmau-test-mini.json"), ("mmar", "MMAR-meta.jsonl")])
def test_each_option_in_turn(name, filename):
    bench = get_benchmark(name)
    items = load_items(DATA / filename, bench)
    assert len(items) == 1000
    filled, expected, where = [], [], []
    for item in items:
        for i, choice in enumerate(item["choices"]):
            copy_ = copy.deepcopy(item)
            assert fill_item(bench, copy_, f"<think>...</think>\n\n<answer>{i}</answer>") == "ok"
            assert copy_[bench.official_key] == choice
            filled.append(copy_)
            expected.append(choice == item["answer"])
            where.append((item["id"], i))
    report = score(bench, filled)
    got = [(c["official_match"], c["match"]) for c in filled]
    exceptions = [w for w, (off, strict), exp in zip(where, got, expected, strict=True) if (off, strict) != (exp, exp)]
    assert exceptions == ACCEPTED_WRONG_OPTIONS[name]
    by_id = {it["id"]: it for it in items}
    for iid, i in exceptions:  # the reason, checked item by item
        item = by_id[iid]
        assert item["choices"][i] != item["answer"] and words(item["choices"][i]) == words(item["answer"])
        assert got[where.index((iid, i))] == (1, 1)
    # an answer listed twice among the options (16 MMAU items) is right under either index
    assert sum(expected) == 1000 + {"mmau": 16, "mmar": 0}[name]
    assert report["official"]["total"]["correct"] == sum(expected) + len(exceptions)
