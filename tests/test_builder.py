"""What a run is made of (deeprnn.training.builder), each part against values worked out by hand:
the preset a corpus of one's own gets, the head and size checks, the batches of every process,
the device and the optimiser."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from deeprnn.data import MusicCorpus, TextCorpus
from deeprnn.errors import ConfigError
from deeprnn.models import DeepRNN
from deeprnn.presets import preset
from deeprnn.training import builder, checkpoint
from deeprnn.training.config import TrainConfig
from deeprnn.training.distributed import World


def text_corpus(level: str, tokens: int = 120, vocab: int = 7) -> TextCorpus:
    stream = torch.arange(tokens) % vocab
    splits = {split: stream for split in ("train", "valid", "test")}
    return TextCorpus("mine", fresh(level), [str(i) for i in range(vocab)], splits, 0)


def music_corpus(lengths: list[int]) -> MusicCorpus:
    pieces = [np.full((n, 88), i % 2, dtype=np.uint8) for i, n in enumerate(lengths)]
    return MusicCorpus("mine", {s: pieces for s in ("train", "valid", "test")})


def fresh(text: str) -> str:
    """``text`` as a new string object, as a command line gives it (not the interned literal)."""
    return "".join(list(text))


@pytest.mark.parametrize(("level", "task"), [("char", "ptb-char"), ("word", "ptb-word")])
def test_text_of_ones_own_gets_the_penn_treebank_preset_of_its_level(level, task):
    config = builder.model_config(TrainConfig(model="dots-rnn"), text_corpus(level))
    paper = preset("dots-rnn", task)  # characters 400 / 400 / 600, words 200 / 200 / 200
    assert (config.hidden_size, config.output_sizes) == (paper.hidden_size, paper.output_sizes)
    assert (config.input_size, config.output_size) == (7, 7)  # its own vocabulary


def test_a_model_that_reads_or_predicts_more_symbols_than_the_data_has_is_refused():
    corpus = text_corpus("word")
    good = builder.model_config(TrainConfig(model="rnn"), corpus)
    assert builder.check_head(good, corpus) is good
    for sizes in ((8, 7), (7, 8), (6, 7), (7, 6)):
        bad = replace(good, input_size=sizes[0], output_size=sizes[1])
        with pytest.raises(
            ConfigError, match=f"reads {sizes[0]} and predicts {sizes[1]} symbols; mine has 7"
        ):
            builder.check_head(bad, corpus)


def test_only_an_out_of_memory_error_becomes_a_config_error(monkeypatch):
    config = preset("rnn", "jsb")

    def fails(error):
        def build(_config):
            raise error

        monkeypatch.setattr(builder, "DeepRNN", build)

    fails(RuntimeError("a bug of ours"))
    with pytest.raises(RuntimeError, match="a bug of ours"):
        builder.build_model(config)
    fails(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    with pytest.raises(ConfigError, match="do not fit in memory.*hidden_size 200"):
        builder.build_model(config)
    fails(MemoryError())
    with pytest.raises(ConfigError, match="do not fit in memory"):
        builder.build_model(config)


def test_text_training_batches_are_the_configs_columns_and_segments():
    corpus = text_corpus("word", tokens=120)
    config = TrainConfig(batch_size=4, bptt_steps=10, eval_batch_size=6)
    training = builder.batches(config, corpus, "train", training=True)
    assert (training.batch, training.steps, len(training)) == (4, 10, 3)  # 30 rows of 4 columns
    evaluation = builder.batches(config, corpus, "valid", training=False)
    assert (evaluation.batch, evaluation.steps, len(evaluation)) == (6, 1000, 1)  # 20 rows, one segment


def test_text_columns_are_shared_among_processes():
    corpus = text_corpus("word", tokens=120)
    config = TrainConfig(batch_size=8, eval_batch_size=6)
    # Training: each of 2 processes takes batch_size columns of its own (16 in all).
    mine = builder.batches(config, corpus, "train", training=True, world=World(rank=1, size=2))
    assert (mine.batch, mine.tokens, mine.all_sizes.tolist()) == (8, 120, [8] * 8 + [7] * 8)
    # A stream too short for batch_size columns in every process: one token a column.
    tiny = text_corpus("word", tokens=3)
    assert builder.batches(config, tiny, "train", training=True, world=World(rank=0, size=3)).batch == 1
    assert builder.batches(config, tiny, "train", training=True, world=World(rank=0, size=2)).batch == 1
    short = text_corpus("word", tokens=12)  # 6 tokens a process: 6 columns, not batch_size's 8
    assert builder.batches(config, short, "train", training=True, world=World(rank=0, size=2)).batch == 6
    with pytest.raises(ValueError, match="a stream of 1 tokens cannot fill 2 columns"):
        builder.batches(config, text_corpus("word", tokens=1), "train", training=True, world=World(0, 2))
    # Evaluation: 6 columns split 3 + 3 between two processes (6 % 2 == 0) ...
    shared = builder.batches(config, corpus, "valid", training=False, world=World(rank=1, size=2))
    assert (shared.batch, shared.sizes.tolist()) == (3, [20, 20, 20])
    # ... but not among four (6 % 4 != 0): every process scores all six columns itself.
    whole = builder.batches(config, corpus, "valid", training=False, world=World(rank=3, size=4))
    assert (whole.batch, whole.all_sizes.tolist()) == (6, [20] * 6)


def test_evaluation_columns_never_outnumber_the_tokens():
    config = TrainConfig(eval_batch_size=16)
    assert builder.eval_columns(config, text_corpus("word", tokens=100), "test") == 16
    assert builder.eval_columns(config, text_corpus("word", tokens=5), "test") == 5
    assert builder.eval_columns(config, text_corpus("word", tokens=1), "test") == 1
    assert builder.eval_columns(config, text_corpus("word", tokens=0), "test") == 1  # an empty split: one


def test_music_evaluation_is_shared_only_when_every_process_gets_a_piece():
    config = TrainConfig(eval_batch_size=16)
    corpus = music_corpus([5, 9, 3, 7])
    assert not builder.shares_evaluation(config, corpus, "valid", World())
    assert builder.shares_evaluation(config, corpus, "valid", World(rank=0, size=4))
    assert builder.shares_evaluation(config, corpus, "valid", World(rank=0, size=3))
    assert not builder.shares_evaluation(config, corpus, "valid", World(rank=0, size=5))
    # Shared: the pieces by length, dealt in turn (9, 5 to the first of two; 7, 3 to the second).
    second = builder.batches(config, corpus, "valid", training=False, world=World(rank=1, size=2))
    assert sorted(len(p) for p in second.pieces) == [3, 7]
    # Not shared: every process scores every piece.
    alone = builder.batches(config, corpus, "valid", training=False, world=World(rank=4, size=5))
    assert sorted(len(p) for p in alone.pieces) == [3, 5, 7, 9]


def test_text_evaluation_is_shared_only_when_its_columns_divide_evenly():
    config = TrainConfig(eval_batch_size=6)
    corpus = text_corpus("word", tokens=120)
    assert not builder.shares_evaluation(config, corpus, "valid", World())
    assert [builder.shares_evaluation(config, corpus, "valid", World(0, n)) for n in (2, 3, 4, 5, 6, 7)] == [
        True,
        True,
        False,
        False,
        True,
        False,
    ]


def test_the_device_is_the_one_asked_for_and_auto_takes_a_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert builder.pick_device(fresh("auto")) == torch.device("cpu")
    assert builder.pick_device(fresh("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="device 'cuda' was asked for, but PyTorch sees no GPU"):
        builder.pick_device(fresh("cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert builder.pick_device(fresh("auto")) == torch.device("cuda")
    assert builder.pick_device(fresh("cpu")) == torch.device("cpu")
    assert builder.pick_device(fresh("cuda")) == torch.device("cuda")


def test_a_results_file_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H200")
    assert builder.device_name(torch.device("cuda", 0)) == "cuda:0 (NVIDIA H200)"
    assert builder.device_name(torch.device("cpu")) == "cpu"
    assert builder.device_name(torch.device("meta")) == "meta"


@pytest.mark.parametrize(
    ("name", "kind"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_the_optimiser_is_the_one_named(name, kind):
    model = torch.nn.Linear(2, 2)
    optimizer = builder.make_optimizer(TrainConfig(optimizer=fresh(name), weight_decay=0.01), model, set())
    assert type(optimizer) is kind
    assert optimizer.defaults["weight_decay"] == 0.01


@pytest.mark.parametrize("parts", ["recurrence", "all"])
def test_pretraining_copies_the_recurrence_or_the_whole_model(tmp_path, parts):
    trained = DeepRNN(preset("dts-rnn", "jsb"))
    with torch.no_grad():
        for t in trained.parameters():
            t.normal_()
    checkpoint.save(tmp_path / "checkpoints" / "best.pt", {"model": trained.state_dict()})
    model = DeepRNN(preset("dts-rnn", "jsb"))
    before = {n: t.clone() for n, t in model.named_parameters()}
    copied = builder.load_pretrained(model, tmp_path, parts)
    source = dict(trained.named_parameters())
    for name, t in model.named_parameters():
        wanted = parts == "all" or name.startswith("recurrence.")
        assert (name in copied) == wanted
        assert torch.equal(t, source[name] if wanted else before[name])
    assert any(not n.startswith("recurrence.") for n, _ in model.named_parameters())  # ▷ has some
    optimizer = builder.make_optimizer(TrainConfig(pretrained_lr_scale=0.25), model, copied)
    scales = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    assert all(scales[id(t)] == (0.25 if n in copied else 1.0) for n, t in model.named_parameters())


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (preset("dts-rnn", "jsb"), preset("dots-rnn", "jsb")),  # the same ⊕; ▷ lacks a layer
        (preset("dots-rnn", "jsb"), preset("dts-rnn", "jsb")),  # ▷ has one too many
        (replace(preset("dts-rnn", "jsb"), transition_units="relu"), preset("dts-rnn", "jsb")),  # same shapes
    ],
)
def test_copying_the_whole_model_of_another_model_is_refused(tmp_path, source, target):
    state = {"model": DeepRNN(source).state_dict(), "model_config": source.to_dict()}
    checkpoint.save(tmp_path / "checkpoints" / "best.pt", state)
    model = DeepRNN(target)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r'init_parts = "all": that run is another model \(\d+ difference'):
        builder.load_pretrained(model, tmp_path, "all")
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
    assert builder.load_pretrained(model, tmp_path, "recurrence")  # its ⊕ alone fits


def test_copying_the_whole_model_keeps_a_dropout_of_its_own(tmp_path):
    trained = DeepRNN(preset("dts-rnn", "jsb"))
    state = {"model": trained.state_dict(), "model_config": trained.config.to_dict()}
    checkpoint.save(tmp_path / "checkpoints" / "best.pt", state)
    model = DeepRNN(replace(preset("dts-rnn", "jsb"), state_dropout=0.3))
    builder.load_pretrained(model, tmp_path, "all")
    assert all(torch.equal(t, trained.state_dict()[n]) for n, t in model.state_dict().items())


def test_pretraining_from_a_run_of_another_width_is_refused(tmp_path):
    narrow = DeepRNN(replace(preset("rnn", "jsb"), hidden_size=8))
    checkpoint.save(tmp_path / "checkpoints" / "best.pt", {"model": narrow.state_dict()})
    wide = DeepRNN(replace(preset("rnn", "jsb"), hidden_size=16))
    before = {n: t.clone() for n, t in wide.state_dict().items()}
    with pytest.raises(ConfigError, match="no parameter of that run matches this model by name and shape"):
        builder.load_pretrained(wide, tmp_path)
    assert all(torch.equal(before[n], t) for n, t in wide.state_dict().items())
