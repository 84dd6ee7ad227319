import pytest
from retrofit import UsageError
from retrofit_doom_arnold.actions import ActionSpace


@pytest.mark.parametrize("spec,count", [
    ("turn_lr+attack", 3),
    ("move_fb;turn_lr", 8),
    ("move_fb+move_lr;turn_lr;attack", 29),
    ("attack+move_lr;turn_lr;move_fb", 35),
])
def test_arnold_action_counts(spec, count):
    space = ActionSpace(spec)
    assert len(space) == count
    assert all(len(a) == len(space.buttons) for a in space.actions)
    assert all(any(a) for a in space.actions)  # the all-no-op action is dropped
    assert len({tuple(a) for a in space.actions}) == count  # no duplicates


def test_buttons_and_exclusivity():
    space = ActionSpace("move_fb+move_lr;turn_lr;attack")
    assert space.buttons == ["MOVE_FORWARD", "MOVE_BACKWARD", "MOVE_LEFT", "MOVE_RIGHT", "TURN_LEFT", "TURN_RIGHT",
                             "ATTACK"]
    for a in space.actions:
        assert sum(a[:4]) <= 1  # move_fb and move_lr share a group: never together
        assert sum(a[4:6]) <= 1  # never left and right at once
    assert space.actions[space.index_of(["MOVE_FORWARD", "TURN_RIGHT", "ATTACK"])] == [1, 0, 0, 0, 0, 1, 1]
    assert ActionSpace("turn_lr+attack").actions == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_buttons_exist_in_vizdoom():
    vizdoom = pytest.importorskip("vizdoom")
    space = ActionSpace("move_fb+move_lr;turn_lr;attack+use;look_ud;jump;crouch;speed;turn180")
    assert [b.name for b in space.vizdoom_buttons()] == space.buttons
    assert all(isinstance(b, vizdoom.Button) for b in space.vizdoom_buttons())


@pytest.mark.parametrize("spec,token", [("turn_lr+shoot", "shoot"), ("move_fb;;turn_lr", "''"),
                                        ("move_fb;move_fb", "move_fb"), ("", "empty")])
def test_bad_spec_names_token(spec, token):
    with pytest.raises(UsageError, match=token):
        ActionSpace(spec)
