"""The NADE head (RNN-NADE's ▷): an exact distribution over the frames, checked against a plain
loop over the keys, by enumeration of all frames, by gradcheck and by sampling."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from deeprnn import DeepRNN, ModelConfig, preset
from deeprnn.cli import main
from deeprnn.data import load
from deeprnn.errors import ConfigError
from deeprnn.operators.nade import NADE
from deeprnn.training.evaluation import load_best


def loop_nll(nade: NADE, logits: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """-log p(v) of each frame by the defining product over the keys, one key at a time."""
    order = list(range(nade.keys) if nade.order == "ascending" else reversed(range(nade.keys)))
    out = []
    for b_c, v in zip(logits.reshape(-1, nade.logit_size), frames.reshape(-1, nade.keys), strict=True):
        b, a = b_c[: nade.keys], b_c[nade.keys :].clone()
        total = b_c.new_zeros(())
        for k in order:
            p = torch.sigmoid(b[k] + torch.dot(nade.V[k], torch.sigmoid(a)))
            total = total - (torch.log(p) if v[k] > 0 else torch.log1p(-p))
            a = a + v[k] * nade.W[k]
        out.append(total)
    return torch.stack(out).view(frames.shape[:-1])


def nade(keys=10, hidden=7, order="ascending", seed=0) -> NADE:
    torch.manual_seed(seed)
    head = NADE(keys, hidden, order).double()
    with torch.no_grad():  # weights of a trained size, so that the keys depend on each other
        head.V.normal_(0, 1.0)
    return head


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_the_probabilities_of_all_frames_sum_to_one(order):
    head = nade(order=order)
    frames = torch.tensor(list(itertools.product([0.0, 1.0], repeat=10)), dtype=torch.float64)
    logits = torch.randn(head.logit_size, dtype=torch.float64).expand(len(frames), -1)
    total = torch.exp(-head.nll(logits, frames)).sum()
    assert abs(total.item() - 1.0) < 1e-6
    assert len(frames) == 1024


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_nll_matches_a_plain_loop_over_the_keys(order):
    head = nade(order=order)
    logits = torch.randn(4, 3, head.logit_size, dtype=torch.float64)
    frames = (torch.rand(4, 3, 10) < 0.3).double()
    torch.testing.assert_close(head.nll(logits, frames), loop_nll(head, logits, frames))
    # the order matters: the other order is another distribution
    other = nade(order="descending" if order == "ascending" else "ascending")
    assert not torch.allclose(other.nll(logits, frames), head.nll(logits, frames))


def test_chunks_of_frames_give_the_same_nll(monkeypatch):
    from deeprnn.operators import nade as module

    head = nade()
    logits = torch.randn(50, head.logit_size, dtype=torch.float64)
    frames = (torch.rand(50, 10) < 0.4).double()
    whole = head.nll(logits, frames)
    for elements in (7 * 10 * 3, 1):  # 1-12 frames a chunk, by their notes; one frame, however many
        monkeypatch.setattr(module, "_ELEMENTS_PER_CHUNK", elements)
        torch.testing.assert_close(head.nll(logits, frames), whole)


def test_a_nade_of_one_key_and_one_hidden_unit():
    head = nade(keys=1, hidden=1)
    logits = torch.randn(4, 2, dtype=torch.float64)
    frames = torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=torch.float64)
    torch.testing.assert_close(head.nll(logits, frames), loop_nll(head, logits, frames))


def test_the_initial_weights_have_their_stated_scale():
    """W ~ N(0, 1/K): a frame of a few notes moves the hidden units by about one; V ~ N(0, 0.01²):
    the keys start nearly independent, each scored by its bias."""
    torch.manual_seed(0)
    head = NADE(88, 150)
    assert head.W.std().item() == pytest.approx(88**-0.5, rel=0.02)
    assert head.V.std().item() == pytest.approx(0.01, rel=0.02)


def test_gradients_pass_gradcheck():
    head = nade(keys=5, hidden=4)
    logits = torch.randn(3, head.logit_size, dtype=torch.float64, requires_grad=True)
    frames = (torch.rand(3, 5) < 0.5).double()

    def nll(lg, w, v):  # the head's forward is its NLL
        return torch.func.functional_call(head, {"W": w, "V": v}, (lg, frames))

    assert torch.autograd.gradcheck(
        nll, (logits, head.W.detach().requires_grad_(), head.V.detach().requires_grad_())
    )


def test_samples_follow_the_distribution():
    """10,000 frames of 3 keys: each of the 8 frames is drawn as often as its probability says,
    within 4.5 binomial standard deviations."""
    head = nade(keys=3, hidden=4)
    logits = torch.randn(head.logit_size, dtype=torch.float64)
    frames = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    probs = torch.exp(-head.nll(logits.expand(8, -1), frames))
    draws = head.sample(logits.expand(10_000, -1), generator=torch.Generator().manual_seed(1))
    counts = torch.stack([(draws == f).all(-1).sum() for f in frames]).double()
    n = 10_000
    assert torch.all((counts - n * probs).abs() <= 4.5 * torch.sqrt(n * probs * (1 - probs)) + 1)
    cold = head.sample(logits.expand(2000, -1), generator=torch.Generator().manual_seed(1), temperature=0.05)
    assert (cold == cold[0]).all(-1).float().mean() > 0.9  # a low temperature draws the likeliest keys


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_sampling_draws_the_keys_one_after_another(order):
    """Each frame as the plain loop over the keys draws it, from the same uniform numbers:
    key k is on when its number falls below p(v_k = 1 | v_<k) at the temperature."""
    head = nade(order=order)
    logits = torch.randn(40, head.logit_size, dtype=torch.float64)
    logits[:, : head.keys] -= 1.5  # a few notes a frame, as in music
    drawn = head.sample(logits, generator=torch.Generator().manual_seed(2), temperature=0.7)
    uniform = torch.rand(40, head.keys, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    keys = list(range(head.keys) if order == "ascending" else reversed(range(head.keys)))
    expected = torch.zeros(40, head.keys, dtype=torch.float64)
    for frame, (b_c, draws) in enumerate(zip(logits, uniform, strict=True)):
        a = b_c[head.keys :].clone()
        for position, k in enumerate(keys):
            p = torch.sigmoid((b_c[k] + torch.dot(head.V[k], torch.sigmoid(a))) / 0.7)
            if draws[position] < p:
                expected[frame, k] = 1.0
                a = a + head.W[k]
    assert torch.equal(drawn, expected)
    assert 1 < expected.sum(-1).mean() < head.keys - 1  # frames of several notes, not all or none


def test_a_deep_rnn_with_a_nade_head_trains_scores_and_respects_lengths():
    config = ModelConfig(
        input_size=12, output_size=12, hidden_size=8, transition_sizes=(6,), shortcut=True,
        output_sizes=(5,), head="nade", nade_hidden=9,
    )  # fmt: skip
    torch.manual_seed(0)
    model = DeepRNN(config).double()
    assert model.output.out_size == 12 + 9 and {"head.W", "head.V"} <= dict(model.named_parameters()).keys()
    x = (torch.rand(7, 3, 12) < 0.3).double()
    lengths = torch.tensor([7, 4, 0])
    per_step = model.loss(x, lengths=lengths, reduction="none")
    assert per_step.shape == (7, 3) and torch.all(per_step[4:, 1] == 0) and torch.all(per_step[:, 2] == 0)
    alone = model.loss(x[:4, 1:2], reduction="none")  # padding changes nothing
    torch.testing.assert_close(per_step[:4, 1:2], alone)
    silent = torch.zeros_like(x[:1])
    logits, _ = model(torch.cat([silent, x[:-1]]))
    torch.testing.assert_close(per_step[:, 0], loop_nll(model.head, logits[:, 0], x[:, 0]))
    model.loss(x, lengths=lengths).backward()
    assert (
        model.head.W.grad.abs().sum() > 0 and model.recurrence.levels[0].recurrent_weight.grad.abs().sum() > 0
    )


def test_presets_and_settings():
    expected = torch.manual_seed(0).initial_seed(), torch.rand(1)
    torch.manual_seed(0)
    c = preset("DT(S)-RNN-NADE", "jsb")  # a config draws no random numbers (a model's init would move)
    assert torch.equal(torch.rand(1), expected[1])
    assert (c.head, c.name, c.transition_sizes, c.shortcut) == ("nade", "dts-rnn-nade", (400,), True)
    model = DeepRNN(c)
    bernoulli = DeepRNN(preset("dts-rnn", "jsb"))
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in bernoulli.parameters())
    h = c.nade_hidden
    assert extra == 2 * 88 * h + 400 * h + h  # W, V; ▷'s rows and biases for c
    with pytest.raises(ConfigError, match="NADE head .*music.*ptb-char is text"):
        preset("rnn-nade", "ptb-char")
    with pytest.raises(ConfigError, match="nade_order"):
        NADE(4, 3, "sideways")
    sizes = {"input_size": 88, "output_size": 88, "hidden_size": 4}
    with pytest.raises(ConfigError, match="at least one key and one hidden unit, got 88 and 0"):
        ModelConfig(**sizes, head="nade", nade_hidden=0)  # refused by the config, before any model
    with pytest.raises(ConfigError, match="at least one key and one hidden unit"):
        ModelConfig(**sizes, head=json.loads('"nade"'), nade_hidden=0)  # a name read from a file
    assert ModelConfig(**sizes, nade_hidden=0).nade_hidden == 0  # read by a NADE head only
    assert math.isfinite(float(model.loss(torch.zeros(5, 2, 88)).detach()))


def test_train_eval_sample_and_info_from_the_command_line(tmp_path, rolls, capsys):
    """A DT(S)-RNN-NADE trains, resumes its checkpoint, scores and samples through the CLI; the
    head's weights are in the checkpoint and the scores are the exact NLL of its frames."""
    run, sets = tmp_path / "run", []
    for setting in ["hidden_size=8", "nade_hidden=6", "max_updates=6", "eval_every=3", "batch_size=3",
                    "bptt_steps=10", "device=cpu", "time_budget_s=0"]:  # fmt: skip
        sets += ["--set", setting]
    assert main(["train", "--model", "DT(S)-RNN-NADE", "--data", str(rolls), *sets, "--out", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--set", "max_updates=9"]) == 0  # carried on: 3 more updates
    assert json.loads((run / "results.json").read_text())["updates"] == 9
    model, _, _ = load_best(run)
    assert model.config.head == "nade" and model.head.hidden == 6
    capsys.readouterr()
    assert main(["eval", str(run), "--split", "valid", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    pieces = [torch.from_numpy(r.astype("float32")) for r in load(str(rolls)).splits["valid"]]
    total = sum(float(model.loss(p.unsqueeze(1), reduction="sum").detach()) for p in pieces)
    assert scored["value"] == pytest.approx(total / sum(len(p) for p in pieces), rel=1e-5)
    # the TCN paper's convention: frames 2..T of each piece, over the sum of T - 1
    assert main(["eval", str(run), "--split", "valid", "--json", "--from-second-frame"]) == 0
    later = sum(float(model.loss(p.unsqueeze(1), reduction="none")[1:].sum().detach()) for p in pieces)
    tcn = json.loads(capsys.readouterr().out)
    assert tcn["count"] == sum(len(p) - 1 for p in pieces) and tcn["scored_from"] == "second frame"
    assert tcn["value"] == pytest.approx(later / tcn["count"], rel=1e-5) and tcn["value"] != scored["value"]
    results = json.loads((run / "results.json").read_text())
    assert results["scores"]["test_from_second_frame"]["count"] == results["scores"]["test"]["count"] - 3
    assert main(["sample", str(run), "--steps", "12", "--count", "2", "--out", str(tmp_path / "s")]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "sample-0.mid", "sample-0.png", "sample-1.mid", "sample-1.png",
    ]  # fmt: skip
    capsys.readouterr()
    assert main(["info", "--model", "dots-rnn-nade", "--task", "nottingham", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layers"][-1]["layer"] == "head" and info["layers"][-1]["weights"] == 2 * 88 * 150
    assert main(["train", "--model", "rnn", "--data", str(rolls), "--set", "head=categorical", "--out",
                 str(tmp_path / "bad")]) == 2  # fmt: skip
    assert "head 'categorical' does not fit" in capsys.readouterr().err
