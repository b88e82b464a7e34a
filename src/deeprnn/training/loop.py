"""The training loop of one run: updates, evaluations, checkpoints, and the final scores.

    [update … evaluate ─► checkpoint]* ─► best parameters ─► valid and test

:class:`Run` takes a configuration, a run folder and the corpus (it loads nothing), builds what
the run is made of (``deeprnn.training.builder``), and trains: SGD-style updates with weight
noise (``deeprnn.training.noise``) and global-norm clipping, a guard against non-finite updates
(``deeprnn.training.guard``), validation with early stopping and parameter averaging,
``last.pt``/``best.pt`` checkpoints from which a resumed run continues exactly
(``deeprnn.training.run_state``).
:func:`deeprnn.training.trainer.train` loads the corpus and starts or resumes the run in its folder.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from deeprnn import __version__
from deeprnn.data.batching import Batch
from deeprnn.driver import map_carry
from deeprnn.errors import TrainingDiverged
from deeprnn.io import write_json, write_text
from deeprnn.models import DeepRNN, ModelConfig, count_parameters
from deeprnn.operators.protocol import Carry
from deeprnn.training import checkpoint, distributed
from deeprnn.training.averaging import Averaging
from deeprnn.training.builder import (
    ONE_PROCESS,
    Corpus,
    batches,
    device_name,
    kind_of,
    load_pretrained,
    make_optimizer,
    pick_device,
    run_model,
    shares_evaluation,
)
from deeprnn.training.config import TrainConfig
from deeprnn.training.console import Log, NoWriter, ProgressBar
from deeprnn.training.distributed import World, wait_for_all
from deeprnn.training.evaluation import batch_nll, evaluate, split_score
from deeprnn.training.graphs import SegmentGraphs, check_possible, graphs_wanted
from deeprnn.training.guard import NonfiniteGuard
from deeprnn.training.metrics import from_nll, metric_name
from deeprnn.training.noise import noisy, weight_matrices
from deeprnn.training.precision import autocast
from deeprnn.training.progress import Progress
from deeprnn.training.run_folder import newest_checkpoint
from deeprnn.training.run_state import RunState
from deeprnn.training.schedule import Schedule

# Called (on the first process) with each validation record (update, epoch, value, lr, …);
# True stops the run.
Callback = Callable[[dict], bool | None]


class Run(RunState):
    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        corpus: Corpus,
        log: Log = print,
        world: World = ONE_PROCESS,
        device: torch.device | None = None,
        model: DeepRNN | ModelConfig | None = None,
        callback: Callback | None = None,
        pretrained: set[str] | None = None,
    ) -> None:
        """``pretrained``: resuming, the names a checkpoint says were copied from ``init_from``
        (the resume overwrites them, so that run is not read again and may be gone)."""
        self.config, self.out, self.log, self.world = config, Path(out), log, world
        self.device = device or pick_device(config.device)
        torch.manual_seed(config.seed)
        self.corpus, self.kind = corpus, kind_of(config, corpus)
        self.metric = metric_name(self.kind, getattr(self.corpus, "level", "frame"))
        self.model = run_model(config, corpus, model).to(self.device)  # built after seeding
        self.model_config = self.model.config
        self.name = self.model_config.name or "custom"  # the preset's, for the results
        self.callback = callback
        self.train_data = batches(config, self.corpus, "train", training=True, world=world)
        self.weights = weight_matrices(self.model)  # where weight noise goes
        self.pretrained: set[str] = set(pretrained or ())
        if config.init_from and pretrained is None:
            self.pretrained = load_pretrained(
                self.model, Path(config.init_from), config.init_parts, self.train_data.batches(0)
            )
        self.net: nn.Module = self.model  # what training calls: the model, or its DDP wrapper
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
            torch.manual_seed(config.seed + world.rank)  # own dropout masks and weight noise
        self.optimizer = make_optimizer(config, self.model, self.pretrained)
        self.graphs: SegmentGraphs | None = None
        if graphs_wanted(config.cuda_graphs, self.device, world.distributed, self.model):
            check_possible(self.device, world.distributed)
            self.graphs = SegmentGraphs(self.segment, self.model, config.bptt_steps, log)
        self.averaging = Averaging(config, self.model)
        total = config.max_updates or sum(self.train_data.count(e) for e in range(config.epochs))
        self.schedule = Schedule(config, total_updates=total)
        self.progress = Progress()
        self.history: list[dict] = []
        self.state: Carry | None = None  # carried between segments
        self.guard = NonfiniteGuard()
        self.good_state = self.snapshot()  # model and optimiser where a restore returns to
        self.best_model: dict | None = None  # the best parameters (CPU), kept by every process

    def update(self, batch: Batch) -> float | None:
        """One SGD update on a segment; returns its mean NLL per target (None if skipped)."""
        config, model = self.config, self.model
        if batch.reset:
            self.state = None
        # DDP averages the processes' gradients: scaled so, they are those of the global mean.
        scale = self.world.size / max(batch.total, 1)
        graphed = self.graphs.run(batch, self.state, scale) if self.graphs else None
        if graphed is None:
            self.zero_grad()
            graphed = self.segment(batch, self.state, scale)
        loss, self.state = graphed
        norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), config.clip_norm if config.clip_norm > 0 else math.inf
        )
        mean = distributed.sum_across([float(loss)], self.world, self.device)[0] / self.world.size
        if not (math.isfinite(mean) and torch.isfinite(norm)):
            self.state = None  # it may be as broken: the stream goes on from a fresh state
            self.skip(mean)
            return None
        self.guard.finite()
        self.schedule.apply(self.optimizer, self.progress.updates)
        self.optimizer.step()
        self.averaging.update(self.model, self.progress.epoch, self.progress.averaging)
        return mean

    def segment(
        self, batch: Batch, state: Carry | None, scale: float | torch.Tensor
    ) -> tuple[torch.Tensor, Carry]:
        """The forward and backward pass of a segment: the gradient of its NLL × ``scale`` at
        W + σε (weight noise), added to the parameters' ``.grad``; its loss and the state after."""
        with noisy(self.weights, self.config.weight_noise):
            with autocast(self.device, self.config.precision):
                nll, state = batch_nll(self.model, batch, state, self.net)
            loss = nll * scale
            loss.backward()
        return loss.detach(), map_carry(torch.Tensor.detach, state)

    def zero_grad(self) -> None:
        if self.graphs is None:
            self.optimizer.zero_grad(set_to_none=True)
        else:  # in place: the graphs hold the gradient buffers
            self.graphs.zero_grad()

    def skip(self, loss: float) -> None:
        """A non-finite update is not applied. Several in a row: back to the last good state at
        half the rate; too many restores: the run stops (``deeprnn.training.guard``)."""
        self.progress.skipped += 1
        action = self.guard.nonfinite()
        if action == "diverged":
            last = str(newest_checkpoint(self.out) or "none")
            self.diverged(self.guard.diverged(self.progress.updates + 1, loss, last))
        if action == "restore":
            self.model.load_state_dict(self.good_state["model"])
            self.optimizer.load_state_dict(self.good_state["optimizer"])
            self.schedule.halve()
            self.progress.restores += 1
            self.log(
                f"{self.guard.restore_after} non-finite updates in a row: restored the last good "
                f"state, learning rate now {self.schedule.lr():.3g}"
            )

    def diverged(self, error: TrainingDiverged) -> None:
        """Stop the run, saying why in results.json (resuming it raises the error again)."""
        self.log(str(error))
        if self.world.main:
            record = {"model": self.name, "data": self.corpus.name, "version": __version__}
            write_json(self.out / "results.json", {**record, **error.record()})
        raise error

    def score(
        self, split: str, config: TrainConfig, model: DeepRNN | None = None, from_second: bool = False
    ) -> tuple[float, int]:
        """Total NLL and target count of ``split`` under ``model`` (default the trained one), this
        process's share added up over all; ``from_second``: without each piece's first frame."""
        data = batches(config, self.corpus, split, training=False, world=self.world)
        total, count = evaluate(model or self.model, data, self.device, from_second, config.precision)
        if shares_evaluation(config, self.corpus, split, self.world):
            total, count = distributed.sum_across([total, count], self.world, self.device)
        return total, int(count)

    def evaluate_valid(self, train_loss: float) -> tuple[bool, bool]:
        """Score the validation split and keep the best parameters; whether it improved, and
        whether ``patience`` evaluations have passed without improvement (early stopping)."""
        scored = self.averaging.scored(self.model)
        total, count = self.score("valid", self.config, scored)
        value = from_nll(self.metric, total, count)
        p = self.progress
        improved = value < p.best
        if improved:
            p.best, p.best_update, p.evals_since_best = value, p.updates, 0
            self.best_model = {k: t.detach().cpu().clone() for k, t in scored.state_dict().items()}
            self.guard.improved()
        else:
            p.evals_since_best += 1
        best_before = self.averaging.stalls([r["value"] for r in self.history], value)
        if best_before is not None and not self.averaging.active(p.epoch, p.averaging):
            p.averaging = True
            self.log(f"validation stalled ({value:.4f} > {best_before:.4f}): parameter averaging begins")
        restore = self.schedule.after_evaluation(improved)
        if restore and self.best_model is not None:
            # the paper's text recipe: back to the best parameters, learning rate halved
            self.model.load_state_dict(self.best_model)
            self.state = None
        record = {
            "update": p.updates,
            "epoch": p.epoch,
            "split": "valid",
            "metric": self.metric,
            "value": value,
            "nll_per_target": total / count,
            "train_loss": train_loss,
            "lr": self.schedule.lr(),
            "best": p.best,
            "train_seconds": round(p.train_seconds, 2),
            "skipped": p.skipped,
        }
        self.history.append(record)
        self.log(
            f"epoch {p.epoch} update {p.updates}: train {train_loss:.4f}, valid {self.metric} {value:.4f}"
            f"{' (best)' if improved else ''}, lr {self.schedule.lr():.3g}"
        )
        self.writer.add_scalar(f"valid/{self.metric}", value, p.updates)
        return improved, self.config.patience > 0 and p.evals_since_best >= self.config.patience

    def train(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        config, p = self.config, self.progress
        tb = self.out / "tb"
        self.writer = SummaryWriter(str(tb), purge_step=p.updates or None) if self.world.main else NoWriter()
        self.model.train()
        stop = p.done
        while not stop:
            started = time.perf_counter()
            per_epoch = self.train_data.count(p.epoch)
            bar = ProgressBar(per_epoch, p.batch, f"epoch {p.epoch}", shown=self.world.main)
            for batch in self.train_data.batches(p.epoch, p.batch):
                loss = self.update(batch.to(self.device))
                p.batch += 1
                p.updates += 1
                if loss is not None:
                    p.loss_sum, p.loss_count = p.loss_sum + loss, p.loss_count + 1
                    self.writer.add_scalar("train/loss", loss, p.updates)
                bar.update(batch, loss)
                p.train_seconds += time.perf_counter() - started
                end_of_epoch = p.batch >= per_epoch
                if end_of_epoch:
                    p.epoch, p.batch = p.epoch + 1, 0
                    self.state = None
                out_of_time = self.out_of_time()
                out_of_updates = config.max_updates > 0 and p.updates >= config.max_updates
                periodic = config.eval_every > 0 and p.updates % config.eval_every == 0
                if end_of_epoch or periodic or out_of_time or out_of_updates:
                    mean = p.loss_sum / p.loss_count if p.loss_count else math.nan
                    p.loss_sum, p.loss_count = 0.0, 0
                    improved, stop_early = self.evaluate_valid(mean)
                    reasons = {
                        "callback": self.callback_stops(),
                        "early stopping": stop_early,
                        "min_lr": self.schedule.finished(),
                        "time budget": out_of_time,
                        "max updates": out_of_updates,
                        "epochs": p.epoch >= config.epochs,
                    }
                    p.done = stop = any(reasons.values())
                    p.stop_reason = next((r for r, hit in reasons.items() if hit), "")
                    self.save_last(best=improved)
                    self.write_metrics()
                    if stop or end_of_epoch:
                        break
                elif p.updates % config.checkpoint_every == 0:
                    self.save_last()
                started = time.perf_counter()
            else:  # not ended by the epoch's last batch: the next pass would read nothing, forever
                raise RuntimeError(
                    f"epoch {p.epoch}: the training data gave out after batch {p.batch}, "
                    f"before the {per_epoch} batches it counts (its count() and batches() disagree)"
                )
            bar.close()
        self.writer.close()
        return self.finish()

    def callback_stops(self) -> bool:
        """Whether the callback (on the first process, given the last validation) says stop."""
        says = self.callback is not None and self.world.main and self.callback(dict(self.history[-1]))
        return self.callback is not None and self.on_any_process(bool(says))

    def out_of_time(self) -> bool:
        """Whether the time budget is spent."""
        budget = self.config.time_budget_s
        return budget > 0 and self.on_any_process(self.progress.train_seconds >= budget)

    def on_any_process(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process (all learn it, so that they stop together)."""
        return distributed.sum_across([float(flag)], self.world, self.device)[0] > 0

    def write_metrics(self) -> None:
        if self.world.main:
            write_text(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))

    def finish(self) -> dict:
        """Scores of the best parameters on valid and test (text: the whole stream, one column)."""
        if self.best_model is None:
            best = self.out / "checkpoints" / "best.pt"
            if not best.exists():  # no validation score was finite
                last = str(newest_checkpoint(self.out) or "none")
                self.diverged(self.guard.never_finite(len(self.history), self.progress.updates, last))
            self.best_model = checkpoint.load(best)["model"]
        self.model.load_state_dict(self.best_model)
        final = replace(self.config, precision="fp32")  # the table's number: the exact likelihood
        if self.kind == "text":
            final = replace(final, eval_batch_size=1)
        scores = {split: split_score(self.metric, *self.score(split, final)) for split in ("valid", "test")}
        if self.kind == "music":  # also as the TCN paper's code scores: frames 2..T
            later = self.score("test", final, from_second=True)
            scores["test_from_second_frame"] = split_score(self.metric, *later)
        counts = count_parameters(self.model)
        results = {
            "model": self.name,
            "data": self.corpus.name,
            "metric": self.metric,
            f"valid_{self.metric}": scores["valid"]["value"],
            f"test_{self.metric}": scores["test"]["value"],
            **self.progress.summary(),
            "device": device_name(self.device),
            "version": __version__,
            **counts,
            "scores": scores,
        }
        if self.world.main:
            write_json(self.out / "results.json", results)
        wait_for_all(self.world)
        valid, test = scores["valid"]["value"], scores["test"]["value"]
        self.log(
            f"best at update {self.progress.best_update}: valid {self.metric} {valid:.4f}, "
            f"test {self.metric} {test:.4f}"
        )
        return results
