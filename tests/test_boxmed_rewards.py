"""BoxMed-RL SVR rewards (paper Eq. 6-9) on hand-made cases."""

from __future__ import annotations

import pytest

from boxmed_model import rewards


def test_iou_overlap_and_disjoint() -> None:
    # 10x10 boxes overlapping on a 5x10 strip: 50 / (100 + 100 - 50)
    assert rewards.iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert rewards.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert rewards.iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert rewards.iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges: no overlap
    assert rewards.iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # degenerate: no area, no reward
    # swapped corners are read as the same box
    assert rewards.iou((10, 10, 0, 0), (0, 0, 10, 10)) == 1.0


def test_parse_boxes_formats() -> None:
    assert rewards.parse_boxes("(10,20),(30,40)") == [(10.0, 20.0, 30.0, 40.0)]
    assert rewards.parse_boxes("<|box_start|>( 10 , 20 ) , ( 30 , 40 )<|box_end|>") == [(10.0, 20.0, 30.0, 40.0)]
    assert rewards.parse_boxes("(30,40),(10,20) and (1.5,2),(3,4)") == [(10.0, 20.0, 30.0, 40.0), (1.5, 2.0, 3.0, 4.0)]
    assert rewards.parse_boxes("the left lung base") == []
    assert rewards.parse_boxes("(10,20),(30)") == []


GOOD = "<think>Effusion, left lung base.</think>\n<answer>(500,500),(700,800)</answer>"


def test_format_reward_is_visual_rft_fullmatch() -> None:
    assert rewards.format_reward_one(GOOD) == 1.0
    assert rewards.format_reward_one("<think>a\nb</think><answer>x</answer>") == 1.0  # DOTALL
    assert rewards.format_reward_one("(500,500),(700,800)") == 0.0  # no tags
    assert rewards.format_reward_one("<answer>(1,2),(3,4)</answer>") == 0.0  # no think
    assert rewards.format_reward_one("<answer>x</answer><think>y</think>") == 0.0  # wrong order
    assert rewards.format_reward_one("<think>y</think><answer>x</answer> trailing text") == 0.0  # fullmatch
    assert rewards.format_reward_one("<think>y</think><answer>x") == 0.0  # unclosed


def test_iou_reward_single_box_is_eq_6_7() -> None:
    gt = [[500, 500, 700, 800]]
    assert rewards.iou_reward_one(GOOD, gt) == 1.0
    half = "<think>t</think><answer>(600,500),(800,800)</answer>"
    assert rewards.iou_reward_one(half, gt) == pytest.approx(100 * 300 / (2 * 200 * 300 - 100 * 300))
    assert rewards.iou_reward_one("<think>t</think><answer>(0,0),(100,100)</answer>", gt) == 0.0
    # malformed answers: no box -> 0; a box outside the answer tag is ignored
    assert rewards.iou_reward_one("<think>t</think><answer>left lower lobe</answer>", gt) == 0.0
    assert rewards.iou_reward_one("<think>(500,500),(700,800)</think><answer>none</answer>", gt) == 0.0
    # without any answer tag the whole completion is searched (the format reward is what is lost)
    assert rewards.iou_reward_one("(500,500),(700,800)", gt) == 1.0
    assert rewards.iou_reward_one("", gt) == 0.0


def test_several_boxes_are_matched_one_to_one() -> None:
    gt = [[0, 0, 100, 100], [500, 500, 600, 600]]
    both = "<think>t</think><answer>(500,500),(600,600) (0,0),(100,100)</answer>"
    assert rewards.iou_reward_one(both, gt) == 1.0  # order of answers does not matter
    one = "<think>t</think><answer>(0,0),(100,100)</answer>"
    assert rewards.iou_reward_one(one, gt) == pytest.approx(0.5)  # a missed box halves it
    # the same box twice cannot collect two matches; an extra wrong box dilutes
    twice = "<think>t</think><answer>(0,0),(100,100) (0,0),(100,100)</answer>"
    assert rewards.iou_reward_one(twice, gt) == pytest.approx(0.5)
    extra = "<think>t</think><answer>(0,0),(100,100) (500,500),(600,600) (900,900),(950,950)</answer>"
    assert rewards.iou_reward_one(extra, gt) == pytest.approx(2 / 3)
    # several predictions against one ground-truth box: the best one counts, divided by 2
    assert rewards.iou_reward_one(both, [[0, 0, 100, 100]]) == pytest.approx(0.5)


def test_total_reward_is_eq_9_and_trl_signatures() -> None:
    gt = [[500, 500, 700, 800]]
    assert rewards.total_reward(GOOD, gt) == 2.0
    assert rewards.total_reward("(500,500),(700,800)", gt) == 1.0
    conversational = [[{"role": "assistant", "content": GOOD}], [{"role": "assistant", "content": "nothing"}]]
    assert rewards.iou_reward(conversational, solution=[gt, gt], prompts=None, extra_column=[1, 2]) == [1.0, 0.0]
    assert rewards.format_reward(conversational, solution=[gt, gt]) == [1.0, 0.0]
    assert rewards.format_reward([GOOD, "x"]) == [1.0, 0.0]


def test_qwen_coordinate_round_trip() -> None:
    assert rewards.to_qwen((64, 32, 128, 256), 256, 256) == (250.0, 125.0, 500.0, 1000.0)
    assert rewards.from_qwen((250, 125, 500, 1000), 1024, 512) == (256.0, 64.0, 512.0, 512.0)
    assert rewards.format_box((1.4, 2.6, 3, 4)) == "(1,3),(3,4)"
