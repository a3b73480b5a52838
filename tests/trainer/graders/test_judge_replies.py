"""How a judge's free-text reply is read: a score is the first number in range, a label the first named."""

import pytest

from alignd_trainer.graders.judge import JudgeReplyError, parse_label, parse_score


def test_score_is_the_first_number() -> None:
    assert parse_score("Score: 7 out of 10", 0, 10) == 7.0
    assert parse_score("0.5", 0, 1) == 0.5


@pytest.mark.parametrize("reply", ["no idea", "12", "-1"])
def test_a_reply_without_a_number_in_range_is_an_error(reply: str) -> None:
    with pytest.raises(JudgeReplyError):
        parse_score(reply, 0, 10)


def test_label_is_the_first_named_and_the_longer_wins_a_tie() -> None:
    assert parse_label("It is positive, not negative.", ["negative", "positive"]) == "positive"
    assert parse_label("Not relevant at all", ["relevant", "not relevant"]) == "not relevant"
    assert parse_label("IRRELEVANT", ["relevant", "irrelevant"]) == "irrelevant"


def test_a_reply_without_a_label_is_an_error() -> None:
    with pytest.raises(JudgeReplyError, match="names none of the labels"):
        parse_label("maybe", ["yes", "no"])
