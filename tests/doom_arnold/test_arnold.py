import pytest
import torch
from retrofit import UsageError
from retrofit_doom_arnold.actions import ActionSpace
from retrofit_doom_arnold.arnold import ArnoldNet, ArnoldPolicy, preprocess

# DESIGN.md "Arnold checkpoints": the DRQN of the 2017 competition (RGB 60x108, 29 actions)
DRQN_KEYS = {
    "conv.0.weight": [32, 3, 8, 8], "conv.0.bias": [32],
    "conv.2.weight": [64, 32, 4, 4], "conv.2.bias": [64],
    "health_emb.weight": [11, 32], "sel_ammo_emb.weight": [301, 32],
    "proj_game_features.1.weight": [512, 4608], "proj_game_features.1.bias": [512],
    "proj_game_features.4.weight": [2, 512], "proj_game_features.4.bias": [2],
    "rnn.weight_ih_l0": [2048, 4672], "rnn.weight_hh_l0": [2048, 512],
    "rnn.bias_ih_l0": [2048], "rnn.bias_hh_l0": [2048],
    "proj_action_scores.weight": [29, 512], "proj_action_scores.bias": [29],
}


def shapes(net):
    return {k: list(v.shape) for k, v in net.state_dict().items()}


def test_drqn_state_dict_matches_arnold_checkpoint():
    net = ArnoldNet(len(ActionSpace("move_fb+move_lr;turn_lr;attack")))
    assert shapes(net) == DRQN_KEYS
    # a checkpoint with exactly these keys loads strictly, and the config is inferred back from it
    ckpt = {k: torch.randn(s) for k, s in DRQN_KEYS.items()}
    again = ArnoldNet.from_state_dict(ckpt)
    assert again.recurrent and again.n_actions == 29 and again.game_features == ("target", "enemy")
    assert torch.equal(again.state_dict()["rnn.weight_hh_l0"], ckpt["rnn.weight_hh_l0"])


def test_feedforward_keys():
    net = ArnoldNet(8, recurrent=False, game_features=(), history=4)
    assert shapes(net) == {
        "conv.0.weight": [32, 12, 8, 8], "conv.0.bias": [32], "conv.2.weight": [64, 32, 4, 4], "conv.2.bias": [64],
        "health_emb.weight": [11, 32], "sel_ammo_emb.weight": [301, 32],
        "feedforward.0.weight": [512, 4672], "feedforward.0.bias": [512],
        "proj_action_scores.weight": [8, 512], "proj_action_scores.bias": [8]}
    assert isinstance(net.feedforward[1], torch.nn.Sigmoid)
    again = ArnoldNet.from_state_dict(net.state_dict())
    assert not again.recurrent and again.history == 4 and again.channels == 3


def test_forward_shapes_and_scaling():
    torch.manual_seed(0)
    net = ArnoldNet(29).eval()
    screens = torch.randint(0, 256, (2, 5, 3, 60, 108), dtype=torch.uint8)
    variables = torch.tensor([[[100.0, 50.0]] * 5, [[7.0, 400.0]] * 5])
    q, feats, (h, _c) = net(screens, variables)
    assert q.shape == (2, 5, 29) and feats.shape == (2, 5, 2) and h.shape == (1, 2, 512)
    assert ((feats >= 0) & (feats <= 1)).all()
    # screens are divided by 255 inside forward: uint8 and the same values as floats agree
    q2, _, _ = net(screens.float(), variables)
    assert torch.allclose(q, q2)
    # bucketing: health // 10 clipped to 10, ammo clipped to 300
    health, ammo = net.bucket(variables[:, 0])
    assert health.tolist() == [10, 0] and ammo.tolist() == [50, 300]
    # step by step with the carried hidden state equals the whole sequence
    hidden, steps = None, []
    for t in range(5):
        qt, _, hidden = net(screens[:, t], variables[:, t], hidden)
        steps.append(qt[:, 0])
    assert torch.allclose(torch.stack(steps, 1), q, atol=1e-5)
    ff = ArnoldNet(3, recurrent=False, history=4, game_features=("target",))
    q, feats, hidden = ff(torch.zeros(2, 12, 60, 108), torch.tensor([[100.0, 10.0], [0.0, 0.0]]))
    assert q.shape == (2, 3) and feats.shape == (2, 1) and hidden is None


def test_policy_and_bad_variable():
    import numpy as np

    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    assert preprocess(frame).shape == (3, 60, 108)
    for net in (ArnoldNet(5), ArnoldNet(5, recurrent=False, history=4)):
        policy = ArnoldPolicy(net)
        actions = [policy(frame, {"HEALTH": 100.0, "SELECTED_WEAPON_AMMO": 20.0}) for _ in range(3)]
        assert all(0 <= a < 5 for a in actions)
    with pytest.raises(UsageError, match="armor"):
        ArnoldNet(3, variables=("health", "armor"))
