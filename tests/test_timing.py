from cemnet.timing import Timing, paired_ratio, time_call, time_interleaved, time_pair


def test_time_pair_interleaves_the_two_calls_after_warmup():
    order = []
    first, second = time_pair(lambda: order.append("a"), lambda: order.append("b"), repeats=3, warmup=2)
    assert order == ["a", "b"] * 5
    assert len(first.samples) == len(second.samples) == 3


def test_time_interleaved_runs_every_call_in_turn_and_time_call_alone():
    order = []
    timings = time_interleaved([lambda: order.append("a"), lambda: order.append("b"), lambda: order.append("c")],
                               repeats=2, warmup=1)
    assert order == ["a", "b", "c"] * 3
    assert [len(timing.samples) for timing in timings] == [2, 2, 2]
    order.clear()
    assert len(time_call(lambda: order.append("a"), repeats=4, warmup=1).samples) == 4 and order == ["a"] * 5


def test_paired_ratio_divides_repetition_by_repetition():
    ratio = paired_ratio(Timing((2.0, 4.0, 9.0)), Timing((1.0, 4.0, 3.0)))
    assert ratio.samples == (2.0, 1.0, 3.0)
    assert ratio.median == 2.0  # the ratio of the medians (4 / 3) would differ


def test_spread_is_the_interquartile_range_or_the_range_of_few_samples():
    assert Timing((1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)).spread == 4.0
    assert Timing((1.0, 3.0)).spread == 2.0
    assert Timing((1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)).quartiles == (2.0, 6.0)
