"""Sampling music and text from models and runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deeprnn import DeepRNN, ModelConfig
from deeprnn.cli import main
from deeprnn.data.music import midi_to_roll
from deeprnn.errors import ConfigError
from deeprnn.sampling import sample
from deeprnn.training import trainer
from deeprnn.training.config import apply


def test_music_samples_are_frames_and_follow_the_seed():
    torch.manual_seed(0)
    model = DeepRNN(ModelConfig(input_size=88, output_size=88, hidden_size=8))
    a = sample(model, 30, generator=torch.Generator().manual_seed(1))
    b = sample(model, 30, generator=torch.Generator().manual_seed(1))
    assert a.shape == (30, 88) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, b)


@pytest.mark.parametrize("head", ["bernoulli", "nade", "categorical"])
def test_samples_are_the_draws_of_the_whole_model_run_again_at_every_step(head):
    """sample() primes with the context in one call and then runs DeepRNN.step once a draw: the
    draws are those of the plain definition, forward over the context then over each draw,
    with the same random numbers."""
    torch.manual_seed(0)
    size = 6 if head == "categorical" else 9
    config = ModelConfig(
        input_size=size, output_size=size, hidden_size=8, head=head, transition_sizes=(5,), nade_hidden=4
    )
    model = DeepRNN(config, batch_first=True).eval()
    start = torch.tensor([1, 4, 2]) if head == "categorical" else (torch.rand(3, size) < 0.3).float()
    drawn = sample(model, 20, start=start, generator=torch.Generator().manual_seed(3))
    generator, x, h, expected = torch.Generator().manual_seed(3), start.unsqueeze(0), None, []
    with torch.no_grad():
        for _ in range(20):
            logits, h = model(x, h)
            draw = model.head.sample(logits[:, -1], generator=generator)
            expected.append(draw[0])
            x = draw.unsqueeze(1)
    assert torch.equal(drawn, torch.stack(expected))


def test_sampling_refuses_a_model_that_cannot_read_its_draws_or_an_empty_context():
    model = DeepRNN(ModelConfig(input_size=9, output_size=6, hidden_size=4))
    with pytest.raises(ConfigError, match=r"its output size \(6\) must be its input size \(9\)"):
        sample(model, 5)
    model = DeepRNN(ModelConfig(input_size=9, output_size=9, hidden_size=4))
    with pytest.raises(ConfigError, match="start must hold at least one step"):
        sample(model, 5, start=torch.zeros(0, 9))


def test_a_model_in_training_stays_in_training_even_when_sampling_fails():
    model = DeepRNN(ModelConfig(input_size=9, output_size=9, hidden_size=4)).train()
    with pytest.raises(ValueError, match=r"input must be \(T, B, 9\)"):
        sample(model, 5, start=torch.zeros(2, 8))
    assert model.training
    sample(model, 5)
    assert model.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_model_on_the_gpu_samples_there_and_returns_frames_on_the_cpu():
    torch.manual_seed(0)
    model = DeepRNN(ModelConfig(input_size=88, output_size=88, hidden_size=8)).cuda()
    a = sample(model, 30, generator=torch.Generator(device="cuda").manual_seed(1))
    b = sample(model, 30, generator=torch.Generator(device="cuda").manual_seed(1))
    assert a.device.type == "cpu" and a.shape == (30, 88) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, b)


def test_text_samples_are_ids_and_a_cold_temperature_is_greedy():
    torch.manual_seed(0)
    model = DeepRNN(ModelConfig(input_size=6, output_size=6, hidden_size=8, head="categorical"))
    ids = sample(model, 25, start=torch.tensor([5]), generator=torch.Generator().manual_seed(0))
    assert ids.shape == (25,) and ids.dtype == torch.int64 and int(ids.min()) >= 0 and int(ids.max()) < 6
    cold = sample(model, 10, start=torch.tensor([5]), temperature=1e-4)
    # Greedy decoding by hand: the argmax fed back step by step.
    x, h, greedy = torch.tensor([[5]]), None, []
    for _ in range(10):
        logits, h = model(x, h)
        x = logits.argmax(-1)
        greedy.append(int(x))
    assert cold.tolist() == greedy


def test_sample_command_writes_midi_and_picture(tmp_path, data_root):
    config = apply(
        {
            "model": "rnn",
            "data": "jsb",
            "hidden_size": 8,
            "max_updates": 2,
            "batch_size": 32,
            "eval_batch_size": 64,
            "device": "cpu",
        }
    )
    trainer.train(config, tmp_path / "run", data_dir=str(data_root), log=lambda _: None)
    assert (
        main(["sample", str(tmp_path / "run"), "--steps", "40", "--count", "2", "--out", str(tmp_path / "s")])
        == 0
    )
    roll = midi_to_roll(tmp_path / "s" / "sample-1.mid", frames_per_beat=1)  # JSB: a frame a beat
    assert roll.shape[1] == 88 and roll.shape[0] <= 40
    assert (tmp_path / "s" / "sample-0.png").read_bytes()[:4] == b"\x89PNG"
    assert np.isin(roll, (0, 1)).all()


def test_sample_command_writes_text(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split, text in (
        ("train", "the cat sat on the mat\nthe dog sat\n" * 20),
        ("valid", "the cat\n"),
        ("test", "a dog sat\n"),
    ):
        (corpus / f"{split}.txt").write_text(text)
    config = apply(
        {
            "model": "rnn",
            "data": str(corpus),
            "hidden_size": 8,
            "max_updates": 2,
            "batch_size": 2,
            "bptt_steps": 5,
            "device": "cpu",
        }
    )
    trainer.train(config, tmp_path / "run", log=lambda _: None)
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run"), "--steps", "12", "--out", str(tmp_path / "s")]) == 0
    text = (tmp_path / "s" / "sample-0.txt").read_text()
    words = text.split()
    assert 0 < len(words) <= 12
    assert set(words) <= {"the", "cat", "sat", "on", "mat", "dog", "<unk>"}


def test_text_samples_decode_as_their_corpus(tmp_path):
    """A ptb-pennchar run writes '_' for a space: its samples read with spaces (TextCorpus.decode)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("a_a_a\n" * 30)
    settings = {"model": "rnn", "data": str(corpus), "text_level": "char", "hidden_size": 8}
    config = apply({**settings, "max_updates": 30, "batch_size": 2, "bptt_steps": 5, "device": "cpu"})
    trainer.train(config, tmp_path / "run", log=lambda _: None)
    vocab = json.loads((tmp_path / "run" / "vocab.json").read_text())
    (tmp_path / "run" / "vocab.json").write_text(json.dumps({**vocab, "name": "ptb-pennchar"}))
    assert main(["sample", str(tmp_path / "run"), "--steps", "60", "--out", str(tmp_path / "s")]) == 0
    text = (tmp_path / "s" / "sample-0.txt").read_text()
    assert "_" not in text and " " in text
