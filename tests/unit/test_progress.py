"""The time-left estimate shown while the guarded base builds (evaluation/progress.py)."""

from __future__ import annotations

from evaluation.progress import TimeLeft, format_duration


def test_time_left_is_measured_from_the_first_step_not_from_the_setup_before_it():
    clock = [1000.0]
    time_left = TimeLeft(clock=lambda: clock[0])
    assert time_left(1, 250) == ""  # one step: no rate yet
    clock[0] += 40.0  # ten more steps at 4 s each
    assert time_left(11, 250) == "about 16 min left"  # 239 steps x 4 s = 956 s


def test_time_left_follows_a_change_of_pace():
    clock = [0.0]
    time_left = TimeLeft(clock=lambda: clock[0])
    time_left(1, 100)
    clock[0] = 9.0
    assert time_left(10, 100) == "about 2 min left"  # 1 s a step, 90 to go
    clock[0] = 99.0
    assert time_left(20, 100) == "about 7 min left"  # now 5 s a step on average: 80 x 5 s = 400 s


def test_time_left_says_nothing_once_the_run_is_over():
    clock = [0.0]
    time_left = TimeLeft(clock=lambda: clock[0])
    time_left(1, 10)
    clock[0] = 50.0
    assert time_left(10, 10) == ""


def test_durations_read_as_minutes_or_hours():
    assert format_duration(20) == "under a minute"
    assert format_duration(95) == "about 2 min"
    assert format_duration(3600 + 25 * 60) == "about 1 h 25 min"
