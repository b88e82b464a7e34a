"""deeprnn: the deep recurrent networks of "How to Construct Deep Recurrent Neural Networks"
(Pascanu, Gulcehre, Cho, Bengio, ICLR 2014) as composable PyTorch parts.

    h_t = x_t ⊕ h_{t-1}      (:class:`DeepTransition`, run over time by :class:`Recurrence`)
    y_t = ▷ h_t              (:class:`DeepOutput`)

:class:`DeepRNN` puts them together from a :class:`ModelConfig`; :func:`preset` gives the paper's;
:func:`train` trains one, :func:`load_run` loads a trained one from its run folder and
:func:`pretrained` the published model of a row of ``results/`` (each imported when first used).
"""

__version__ = "0.1.0"

from deeprnn.driver import plain_loop, unroll
from deeprnn.models import DeepRNN, ModelConfig, count_parameters
from deeprnn.operators.feedforward import FeedForward
from deeprnn.operators.outputs import DeepOutput
from deeprnn.operators.transitions import DeepTransition
from deeprnn.presets import preset
from deeprnn.recurrence import Recurrence

__all__ = [
    "DeepOutput",
    "DeepRNN",
    "DeepTransition",
    "FeedForward",
    "ModelConfig",
    "Recurrence",
    "count_parameters",
    "preset",
    "load_run",
    "plain_loop",
    "pretrained",
    "train",
    "unroll",
    "__version__",
]


def __getattr__(name: str):
    if name == "train":  # the training machinery loads only when it is wanted
        from deeprnn.training.trainer import train

        return train
    if name == "pretrained":
        from deeprnn.published import pretrained

        return pretrained
    if name == "load_run":
        from deeprnn.training.evaluation import load_run

        return load_run
    raise AttributeError(f"module 'deeprnn' has no attribute {name!r}")
