import pytest

from wod_hub.ratelimit import RateLimiter


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_allows_up_to_limit_then_says_how_long_to_wait():
    clock = Clock()
    rl = RateLimiter(3, 60, clock=clock)
    assert [rl.hit("a") for _ in range(3)] == [None, None, None]
    clock.t += 10
    assert rl.hit("a") == 50  # the oldest hit leaves the window in 50 s
    assert rl.hit("b") is None  # keys are independent
    clock.t += 50
    assert rl.hit("a") is None


def test_refused_hits_do_not_extend_the_wait():
    clock = Clock()
    rl = RateLimiter(1, 60, clock=clock)
    rl.hit("a")
    for _ in range(5):
        clock.t += 10
        rl.hit("a")
    clock.t += 10  # 60 s after the only accepted hit
    assert rl.hit("a") is None


def test_check_does_not_record():
    rl = RateLimiter(1, 60, clock=Clock())
    assert rl.check("a") is None
    assert rl.check("a") is None
    assert rl.hit("a") is None
    assert rl.check("a") is not None


def test_zero_disables():
    rl = RateLimiter(0, 60)
    assert all(rl.hit("a") is None for _ in range(100))


@pytest.mark.parametrize("limit, window", [(-1, 60), (1, 0)], ids=["negative-limit", "zero-window"])
def test_bad_settings(limit, window):
    with pytest.raises(ValueError):
        RateLimiter(limit, window)
