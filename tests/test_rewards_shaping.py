"""Format, tag-count, language, length and repetition rewards."""

from __future__ import annotations

import pytest

from r1kit.errors import UserError
from rewards.format import format_reward, tag_count_reward
from rewards.language import language_consistency_reward
from rewards.length import cosine_length_reward, overlong_penalty_reward
from rewards.repetition import repetition_penalty_reward

GOOD_TAG = "<think>\nLet me add.\n2+2=4\n</think>\n<answer>\n4\n</answer>"


@pytest.mark.parametrize(
    "text,expected",
    [
        (GOOD_TAG, 1.0),
        ("<think>a</think><answer>4</answer>", 1.0),
        ("  \n<think>  a  </think>   \n\n <answer> 4 </answer>  \n", 1.0),
        ("<think>\r\na\r\n</think>\r\n<answer>4</answer>", 1.0),
        ("<think></think><answer>4</answer>", 0.0),
        ("<think>a</think><answer></answer>", 0.0),
        ("<think>a</think>", 0.0),
        ("<answer>4</answer>", 0.0),
        ("preamble <think>a</think><answer>4</answer>", 0.0),
        ("<think>a</think><answer>4</answer> trailing", 0.0),
        ("<think>a</think><answer>4</answer><answer>5</answer>", 0.0),
        ("<think>a</think><think>b</think><answer>4</answer>", 0.0),
        ("<think>a<think>b</think></think><answer>4</answer>", 0.0),
        ("<think>a<answer>3</answer></think><answer>4</answer>", 0.0),
        ("<answer>4</answer><think>a</think>", 0.0),
        ("<think>a</think><answer><answer>4</answer></answer>", 0.0),
    ],
)
def test_format_answer_tag(text, expected):
    assert format_reward([text]) == [expected]


@pytest.mark.parametrize(
    "text,prefilled,expected",
    [
        (r"<think>a</think> So $\boxed{4}$.", False, 1.0),
        (r"<think>a</think> no box", False, 0.0),
        (r"<think>a</think> \boxed{}", False, 0.0),
        (r"<think>a</think> <answer>\boxed{4}</answer>", False, 0.0),
        (r"a</think> \boxed{4}", True, 1.0),
        (r"<think>a</think> \boxed{4}", True, 0.0),
        (r"a</think> \boxed{4}", False, 0.0),
    ],
)
def test_format_boxed_and_prefill(text, prefilled, expected):
    assert format_reward([text], answer_format="boxed", think_prefilled=prefilled) == [expected]


def test_format_prefilled_answer_tag_and_chat_messages():
    msgs = [{"role": "assistant", "content": "a\n</think>\n<answer>4</answer>"}]
    assert format_reward([msgs], think_prefilled=True) == [1.0]
    assert format_reward([msgs]) == [0.0]


def test_format_rejects_unknown_answer_format():
    with pytest.raises(UserError, match="answer_format must be one of"):
        format_reward(["x"], answer_format="latex")


@pytest.mark.parametrize(
    "text,kwargs,expected",
    [
        (GOOD_TAG, {}, 1.0),
        ("<think>a</think><answer>4", {}, 0.75),
        ("<answer>4</answer><think>a</think>", {}, 0.5),
        ("<think>a</think></think><answer>4</answer>", {}, 0.75),
        ("nothing", {}, 0.0),
        ("a</think>\\boxed{4}", {"answer_format": "boxed", "think_prefilled": True}, 1.0),
        ("<think>a</think>", {"answer_format": "boxed"}, 1.0),
        ("a</think><answer>4</answer>", {"think_prefilled": True}, 1.0),
        ("a</think><answer>4</answer>", {}, 0.75),
    ],
)
def test_tag_count_partial_credit(text, kwargs, expected):
    assert tag_count_reward([text], **kwargs) == [pytest.approx(expected)]


@pytest.mark.parametrize(
    "text,target,expected",
    [
        ("<think>First add the two numbers.</think>4", "en", 1.0),
        ("<think>首先把两个数相加</think>4", "zh", 1.0),
        ("<think>首先把两个数相加</think>4", "en", 0.0),
        ("<think>We add 两个数</think>", "en", pytest.approx(2 / 5)),  # 2 words vs 3 characters
        ("<think>We add 两个数</think>", "zh", pytest.approx(3 / 5)),
        ("<think>$x^2 + \\frac{1}{2}$ = 3</think>", "en", None),
        ("thought before a prefilled close</think>答案", "en", 1.0),
        ("<think>まず two を足す</think>", "ja", pytest.approx(5 / 6)),  # 4 kana + 1 kanji vs 1 word
        ("<think>먼저 더하기</think>", "ko", 1.0),
    ],
)
def test_language_consistency(text, target, expected):
    assert language_consistency_reward([text], target=target) == [expected]


def test_language_target_is_validated():
    with pytest.raises(UserError, match="target must be one of"):
        language_consistency_reward(["x"], target="klingon")


def test_cosine_orders_by_correctness_then_length():
    completions = ["<answer>4</answer>", "<answer>4</answer>", "<answer>5</answer>", "<answer>5</answer>"]
    ids = [[0] * 100, [0] * 900, [0] * 100, [0] * 900]
    short_ok, long_ok, short_bad, long_bad = cosine_length_reward(
        completions, ["4"] * 4, max_completion_len=1000, completion_token_ids=ids
    )
    assert short_ok > long_ok > long_bad > short_bad
    assert 0.5 <= long_ok and short_ok <= 1.0 and -1.0 <= short_bad and long_bad <= -0.5


def test_cosine_counts_tokens_not_characters():
    text = ["<think> " + "word " * 50 + "</think><answer>4</answer>"]
    by_tokens = cosine_length_reward(text, ["4"], max_completion_len=100, completion_token_ids=[[1] * 100])
    by_words = cosine_length_reward(text, ["4"], max_completion_len=100)
    assert by_tokens == [0.5]  # 100 tokens = the max length
    assert by_words[0] == pytest.approx(0.75, abs=0.02)  # 52 words: about half way


def test_cosine_skips_missing_gold_and_clips_long():
    out = cosine_length_reward(
        ["<answer>4</answer>"] * 2, ["4", None], max_completion_len=10, completion_token_ids=[[0] * 50, [0]]
    )
    assert out == [0.5, None]


@pytest.mark.parametrize(
    "length,expected", [(0, 0.0), (3072, 0.0), (3073, -1 / 1024), (3584, -0.5), (4096, -1.0), (5000, -1.0)]
)
def test_dapo_overlong_penalty(length, expected):
    out = overlong_penalty_reward(
        ["x"], max_completion_len=4096, cache_len=1024, completion_token_ids=[[0] * length]
    )
    assert out == [pytest.approx(expected)]


def test_overlong_params_validated_and_token_rows_checked():
    with pytest.raises(UserError, match="cache_len < max_completion_len"):
        overlong_penalty_reward(["x"], max_completion_len=10, cache_len=10)
    with pytest.raises(ValueError, match="rows"):
        overlong_penalty_reward(["x", "y"], completion_token_ids=[[1]])


def test_repetition_penalty():
    looping = "so we try again and " * 20
    varied = "the quick brown fox jumps over the lazy dog near a river bank today"
    loop_penalty, varied_penalty, short = repetition_penalty_reward([looping, varied, "hi"], ngram_size=3)
    assert varied_penalty == 0.0 and short == 0.0
    assert -1.0 <= loop_penalty < -0.9
    assert repetition_penalty_reward([looping], max_penalty=-0.5)[0] == pytest.approx(loop_penalty / 2)
    with pytest.raises(UserError, match="max_penalty must be <= 0"):
        repetition_penalty_reward(["x"], max_penalty=1.0)
