"""Data sets: exact sizes, safe pickles, MIDI, BPTT batching, and clear errors on bad input."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import torch

from deeprnn import DeepRNN, ModelConfig
from deeprnn.cli import main
from deeprnn.data import DataError, MusicCorpus, load, registry, stats
from deeprnn.data.batching import MusicBatches, TextBatches
from deeprnn.data.download import download
from deeprnn.data.music import load_pickle, roll_to_midi
from deeprnn.data.text import load_text_folder

# The tables of shared/data/README.md and the issue.
SIZES = {
    "jsb": ((229, 13807), (76, 4602), (77, 4725)),
    "nottingham": ((694, 176561), (173, 45513), (170, 44463)),
    "musedata": ((524, 245202), (135, 82755), (124, 64339)),
    "piano-midi": ((87, 75911), (12, 8540), (25, 19036)),
}
TEXT = {
    "ptb-word": (10000, 929589, 73760, 82430),
    "ptb-char": (50, 5059550, 396412, 446184),
    "ptb-pennchar": (49, 4837402, 379102, 423247),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_music_sizes(name, data_root, capsys):
    assert main(["data", "stats", name, "--json", "--data-dir", str(data_root)]) == 0
    result = json.loads(capsys.readouterr().out)
    for split, (pieces, frames) in zip(("train", "valid", "test"), SIZES[name], strict=True):
        assert result[split] == {"sequences": pieces, "steps": frames}


@pytest.mark.parametrize("name", sorted(TEXT))
def test_text_sizes(name, data_root, capsys):
    assert main(["data", "stats", name, "--json", "--data-dir", str(data_root)]) == 0
    result = json.loads(capsys.readouterr().out)
    vocab, train, valid, test = TEXT[name]
    assert result["vocab_size"] == vocab
    assert [result[s]["tokens"] for s in ("train", "valid", "test")] == [train, valid, test]


def test_paper_char_stream_is_the_word_files_characters(data_root):
    corpus = load("ptb-char", data_root)
    text = (data_root / "ptb" / "ptb.valid.txt").read_text()
    first_line = text.splitlines(keepends=True)[0][1:]
    assert corpus.decode(corpus.splits["valid"][: len(first_line)]) == first_line
    assert corpus.vocab[corpus.boundary] == "\n"


def test_pickle_matches_mat_frame_for_frame(data_root):
    from_pickle = load_pickle(data_root / "music" / "jsb_chorales.pickle")
    from_mat = load("jsb", data_root).splits
    for split in ("train", "valid", "test"):
        assert len(from_pickle[split]) == len(from_mat[split])
        for a, b in zip(from_pickle[split], from_mat[split], strict=True):
            np.testing.assert_array_equal(a, b)


class _Evil:
    def __reduce__(self):
        return (open, (MARKER, "w"))


MARKER = ""


def test_pickle_that_would_run_code_is_refused(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps({"train": [[(60,)]], "valid": [_Evil()], "test": []}, protocol=2))
    with pytest.raises(DataError, match="refusing to load io.open"):
        load_pickle(evil)
    # The command line, in a fresh process: non-zero exit, and the code never ran.
    run = subprocess.run(
        [sys.executable, "-m", "deeprnn.cli", "data", "stats", str(evil)], capture_output=True, text=True
    )
    assert run.returncode != 0 and "refusing" in run.stderr
    assert not (tmp_path / "pwned").exists()


def test_pickle_with_system_call_is_refused(tmp_path):
    evil = tmp_path / "os.pickle"
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "x").encode() + b"'\ntR.")
    with pytest.raises(DataError, match="refusing to load os.system"):
        load_pickle(evil)
    assert not (tmp_path / "x").exists()


def test_pickle_with_pitch_outside_the_keys(tmp_path):
    bad = tmp_path / "bad.pickle"
    bad.write_bytes(pickle.dumps({"train": [[(60, 12)]], "valid": [[(60,)]], "test": [[(61,)]]}))
    with pytest.raises(DataError, match="pitch 12 is outside the 88 keys"):
        load_pickle(bad)


def test_mat_errors(tmp_path):
    no_vars = tmp_path / "novars.mat"
    scipy.io.savemat(no_vars, {"train": np.zeros((2, 88))})
    with pytest.raises(DataError, match="no variable 'traindata'"):
        load(str(no_vars))
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = np.zeros((3, 87))
    narrow = tmp_path / "narrow.mat"
    scipy.io.savemat(narrow, {"traindata": cells, "validdata": cells, "testdata": cells})
    with pytest.raises(DataError, match=r"shape \(3, 87\), expected \(T, 88\)"):
        load(str(narrow))


def test_a_benchmarks_name_means_it_beside_a_folder_so_named(tmp_path, data_root, monkeypatch):
    """`--out jsb` makes a folder called jsb before the data loads: the name still means JSB
    Chorales (229 training chorales); ./jsb is the folder."""
    (tmp_path / "jsb").mkdir()
    monkeypatch.chdir(tmp_path)
    corpus = load("jsb", data_root)
    assert (corpus.name, len(corpus.splits["train"])) == ("jsb", 229)
    with pytest.raises(DataError, match="jsb"):
        load("./jsb", data_root)  # an empty folder: no MIDI files in it


def test_truncated_file_and_checksum(tmp_path, data_root):
    (tmp_path / "music").mkdir()
    data = (data_root / "music" / "JSB_Chorales.mat").read_bytes()
    (tmp_path / "music" / "JSB_Chorales.mat").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="JSB_Chorales.mat"):
        load("jsb", tmp_path)
    rows = {r["path"]: r["status"] for r in registry.verify(tmp_path)}
    assert rows["music/JSB_Chorales.mat"] == "checksum mismatch"
    assert rows["music/Nottingham.mat"] == "missing"
    assert main(["data", "verify", "--data-dir", str(tmp_path)]) == 1


def test_missing_file_names_it_and_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"missing data file .*Nottingham.mat.*TCN"):
        load("nottingham", tmp_path)


def test_download_fails_fast_and_writes_nothing(tmp_path, monkeypatch):
    path = "music/JSB_Chorales.mat"
    monkeypatch.setitem(registry.FILES, path, registry.DataFile(path, "0" * 64, "http://127.0.0.1:9/jsb.mat"))
    with pytest.raises(DataError, match=r"127.0.0.1:9/jsb.mat.*put it at .*JSB_Chorales.mat"):
        download(tmp_path, "jsb", log=lambda _: None)
    assert not (tmp_path / "music").exists() or not any((tmp_path / "music").iterdir())


def test_download_builds_pennchar_from_the_word_files(tmp_path, data_root):
    shutil.copytree(data_root / "ptb", tmp_path / "ptb", ignore=shutil.ignore_patterns("ptb.char.*"))
    for p in (tmp_path / "ptb").iterdir():
        p.chmod(0o644)
    download(tmp_path, "ptb-pennchar", log=lambda _: None)
    rows = {r["path"]: r["status"] for r in registry.verify(tmp_path)}
    assert all(rows[f"ptb/ptb.char.{s}.txt"] == "ok" for s in ("train", "valid", "test"))


def test_text_errors(tmp_path):
    (tmp_path / "train.txt").write_text("a b c\n")
    (tmp_path / "valid.txt").write_bytes(b"a \xff b\n")
    (tmp_path / "test.txt").write_text("a\n")
    with pytest.raises(DataError, match=r"valid.txt: not UTF-8 text \(byte 2"):
        load_text_folder(tmp_path)
    (tmp_path / "valid.txt").write_text("   \n")
    with pytest.raises(DataError, match="valid.txt: the file is empty"):
        load_text_folder(tmp_path)
    (tmp_path / "test.txt").unlink()
    with pytest.raises(DataError, match="missing test"):
        load_text_folder(tmp_path)


def test_user_corpus_with_unknown_words(tmp_path):
    (tmp_path / "train.txt").write_text("the cat sat\nthe dog\n")
    (tmp_path / "valid.txt").write_text("the bird\n")
    (tmp_path / "test.txt").write_text("a cat\n")
    words = load(str(tmp_path))
    assert words.decode(words.splits["valid"]) == "the <unk>\n"
    assert words.vocab_size == len({"the", "cat", "sat", "dog", "<eos>", "<unk>"})
    chars = load(str(tmp_path), text_level="char")
    assert chars.vocab[chars.boundary] == "\n"
    assert chars.decode(chars.splits["train"]) == "the cat sat\nthe dog\n"


def test_midi_folder_becomes_a_corpus(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "valid", "test"):
        (tmp_path / split).mkdir()
        for i in range(2):
            roll_to_midi((rng.random((20 + i, 88)) < 0.1).astype(np.uint8), tmp_path / split / f"{i}.mid")
    corpus = load(str(tmp_path))
    assert isinstance(corpus, MusicCorpus)
    assert stats(corpus)["valid"] == {"sequences": 2, "steps": 41}
    bad = tmp_path / "train" / "broken.mid"
    bad.write_bytes(b"not midi")
    with pytest.raises(DataError, match="broken.mid: not a readable MIDI file"):
        load(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Batching


@pytest.mark.parametrize("n,batch,steps", [(103, 1, 10), (103, 4, 7), (100, 10, 10), (37, 5, 50)])
def test_text_batching_scores_every_token_once(n, batch, steps):
    ids = torch.randint(1, 20, (n,))
    batches = list(TextBatches(ids, batch, steps, boundary=0))
    assert sum(b.count for b in batches) == n
    columns = [[] for _ in range(batch)]
    contexts = [[] for _ in range(batch)]
    for b in batches:
        lengths = b.lengths if b.lengths is not None else torch.full((batch,), len(b.inputs))
        for j in range(batch):
            columns[j].extend(b.targets[: lengths[j], j].tolist())
            contexts[j].extend(b.inputs[: lengths[j], j].tolist())
    assert sum(columns, []) == ids.tolist()  # contiguous columns, in order, each token once
    assert sum(contexts, []) == [0] + ids[:-1].tolist()  # the input is the previous token
    assert [b.reset for b in batches] == [True] + [False] * (len(batches) - 1)


def test_music_batching_scores_every_frame_once():
    rng = np.random.default_rng(0)
    pieces = [(rng.random((n, 88)) < 0.1).astype(np.uint8) for n in (5, 17, 9, 30, 1, 12)]
    batches = MusicBatches(pieces, batch=4, max_steps=8)
    assert len(list(batches.batches())) == len(batches)
    total, rebuilt = 0, {i: [] for i in range(len(pieces))}
    stream = list(batches.batches())
    k = 0
    for group in batches.groups():
        for c in range(batches._chunks(group)):
            b = stream[k]
            assert b.reset == (c == 0)
            for j, i in enumerate(group):
                n = int(b.lengths[j]) if b.lengths is not None else len(b.inputs)
                rebuilt[i].append(b.targets[:n, j].numpy())
            total += b.count
            k += 1
    assert total == sum(len(p) for p in pieces)
    for i, piece in enumerate(pieces):
        np.testing.assert_array_equal(np.concatenate(rebuilt[i]), piece)


def test_music_shuffle_is_seeded_and_resumable():
    pieces = [np.zeros((n, 88), np.uint8) for n in range(1, 30)]
    a = MusicBatches(pieces, 4, 5, shuffle=True, seed=3)
    assert a.groups(0) == MusicBatches(pieces, 4, 5, shuffle=True, seed=3).groups(0)
    assert a.groups(0) != a.groups(1)
    whole = list(a.batches(epoch=2))
    rest = list(a.batches(epoch=2, start=7))
    assert len(rest) == len(whole) - 7
    for x, y in zip(whole[7:], rest, strict=True):
        assert torch.equal(x.inputs, y.inputs) and x.reset == y.reset


def test_music_batch_count_follows_each_epochs_grouping():
    pieces = [np.zeros((n, 88), np.uint8) for n in (3, 95, 5, 60, 2, 33, 4, 71, 12, 1)]
    batches = MusicBatches(pieces, 2, 10, shuffle=True, seed=0)
    counts = [batches.count(e) for e in range(6)]
    assert len(set(counts)) > 1  # pairing long with short pieces changes the number of chunks
    for epoch, count in enumerate(counts):
        stream = list(batches.batches(epoch))
        assert len(stream) == count
        assert sum(b.count for b in stream) == sum(len(p) for p in pieces)


def test_carried_state_equals_whole_columns():
    torch.manual_seed(0)
    model = DeepRNN(ModelConfig(input_size=12, output_size=12, hidden_size=8, head="categorical", levels=2))
    ids = torch.randint(0, 12, (53,))
    batches = TextBatches(ids, batch=4, steps=6, boundary=0)
    per_column = [[] for _ in range(4)]
    with torch.no_grad():
        h = None
        for b in batches:
            if b.reset:
                h = None
            logits, h = model(b.inputs, h, b.lengths)
            nll = model.head.nll(logits, b.targets)
            lengths = b.lengths if b.lengths is not None else torch.full((4,), len(b.inputs))
            for j in range(4):
                per_column[j].append(nll[: lengths[j], j])
        start = 0
        for j, size in enumerate(batches.sizes.tolist()):
            context = torch.cat([torch.tensor([0]), ids])[start : start + size]
            target = ids[start : start + size]
            whole = model.head.nll(model(context[:, None])[0], target[:, None])[:, 0]
            torch.testing.assert_close(torch.cat(per_column[j]), whole)
            start += size


def test_carried_state_equals_whole_pieces():
    torch.manual_seed(0)
    model = DeepRNN(
        ModelConfig(input_size=88, output_size=88, hidden_size=8, transition_sizes=(6,), shortcut=True)
    )
    rng = np.random.default_rng(0)
    pieces = [(rng.random((n, 88)) < 0.1).astype(np.uint8) for n in (11, 4, 23, 7, 16)]
    batches = MusicBatches(pieces, batch=2, max_steps=5)
    per_piece = {i: [] for i in range(len(pieces))}
    stream = iter(batches.batches())
    with torch.no_grad():
        for group in batches.groups():
            h = None
            for _ in range(batches._chunks(group)):
                b = next(stream)
                if b.reset:
                    h = None
                logits, h = model(b.inputs, h, b.lengths)
                nll = model.head.nll(logits, b.targets)
                for j, i in enumerate(group):
                    n = int(b.lengths[j]) if b.lengths is not None else len(b.inputs)
                    per_piece[i].append(nll[:n, j])
        for i, piece in enumerate(pieces):
            frames = torch.from_numpy(piece.astype(np.float32))
            inputs = torch.cat([torch.zeros(1, 88), frames[:-1]])
            whole = model.head.nll(model(inputs[:, None])[0], frames[:, None])[:, 0]
            torch.testing.assert_close(torch.cat(per_piece[i]), whole)
