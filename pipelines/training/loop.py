"""The training engine: phases in one fixed order, a pure ``lr_at``, per-epoch checkpoints and resume."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from models.backbones import classifier_of, create_backbone, model_args, pooled_features
from models.weights import LocalWeights, WeightsSource
from pipelines.preprocess import grayscale_norm
from pipelines.training import data as D
from pipelines.training import strategies as S
from pipelines.training.evaluation import auroc
from pipelines.training.spec import TrainData, TrainingCancelled, TrainSpec, positive_class_index
from pipelines.training.warm_start import InitState, apply_init_state

_logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hilum.checkpoint/1"
EVAL_BATCH = 64
MIN_DELTA = 1e-3  # smallest change of validation AUROC or loss that counts as a change


def lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.01) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then cosine decay to ``min_lr_ratio * base_lr``."""
    min_lr = base_lr * min_lr_ratio
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """Mixed precision on CUDA only (``auto``: bf16 where supported, else fp16 with a GradScaler); None = fp32."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def selection_step(
    metric: str, score: float | None, loss: float | None, best: float | None, best_loss: float | None
) -> tuple[bool, bool]:
    """(keep these weights as the best, reset the early-stopping clock) for one validated epoch.

    ``auroc``: the higher metric wins; a tie (a small validation split often sits at AUROC 1.0 from epoch 1)
    goes to a validation loss lower by more than ``MIN_DELTA`` but does not reset the clock, so patience runs
    out while AUROC is saturated even if the model still improves.
    ``auroc_loss``: an epoch improves when its metric is higher by more than ``MIN_DELTA``, or no lower by
    more than that and its loss lower by more than that: both keep the weights and reset the clock, so training
    stops when neither ranking nor confidence on validation films improves any more.
    """
    if score is None or best is None:
        return True, True
    lower_loss = loss is not None and best_loss is not None and loss < best_loss - MIN_DELTA
    if metric == "auroc":
        return score > best or (score == best and lower_loss), score > best
    improved = score > best + MIN_DELTA or (score >= best - MIN_DELTA and lower_loss)
    return improved, improved


def weights_label(weights: WeightsSource) -> str:
    return f"local:{Path(weights.path).name}" if isinstance(weights, LocalWeights) else str(weights)


@dataclass
class Progress:
    """Book-keeping for the ``on_progress`` events (throughput, elapsed and ETA)."""

    total_steps: int
    started: float = field(default_factory=time.perf_counter)
    steps_done_here: int = 0

    def eta(self, global_step: int) -> float | None:
        if self.steps_done_here == 0:
            return None
        per_step = (time.perf_counter() - self.started) / self.steps_done_here
        return max(0.0, (self.total_steps - global_step) * per_step)


class TrainingRun:
    """One job's state. Hooks (data, model, loss, optimizer, schedule) are methods; ``train_classifier`` in
    ``pipelines.train`` fixes the order of the phases."""

    def __init__(
        self,
        spec: TrainSpec,
        data: TrainData,
        out_dir: Path,
        *,
        weights: WeightsSource,
        on_progress: Callable[[dict], None],
        should_stop: Callable[[], bool],
        init_state: InitState | None = None,
    ) -> None:
        self.spec, self.data, self.out_dir = spec, data, Path(out_dir)
        self.weights, self.on_progress, self.should_stop = weights, on_progress, should_stop
        self.init_state = init_state
        self.device = resolve_device(spec.device)
        self.num_classes = len(data.class_names)
        self.positive = positive_class_index(data.class_names)
        self.ckpt_path = self.out_dir / "checkpoints" / "last.pt"
        self.fingerprint = D.data_fingerprint(
            data.class_names,
            {"train": data.train, "val": data.val, "test": data.test, "calibration": data.calibration},
        )
        self.history: list[dict] = []
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.last_lr = 0.0
        self.best_metric: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.stopped_early = False
        self.ema: dict[str, torch.Tensor] | None = None  # moving average of the parameters (ema_decay)
        self.features: dict[str, torch.Tensor] = {}
        self.timings: dict[str, float] = {}

    # ---- hooks -------------------------------------------------------------------------------------
    def build_data(self) -> None:
        s = self.spec
        t0 = time.perf_counter()
        self.train_set = D.load_split(self.data.train, s.image_size)
        self.val_set = D.load_split(self.data.val, s.image_size)
        self.test_items = self.data.test
        self.timings["decode_s"] = round(time.perf_counter() - t0, 3)
        _logger.info(
            "decoded %d train + %d val images in %.1f s",
            len(self.train_set),
            len(self.val_set),
            time.perf_counter() - t0,
        )
        if len(self.train_set) == 0:
            raise ValueError("the training split is empty")
        self.train_set = self.resident(self.train_set)
        self.steps_per_epoch = len(D.batches(torch.arange(len(self.train_set)), s.batch_size))
        self.total_steps = self.steps_per_epoch * s.epochs
        self.warmup_steps = min(self.steps_per_epoch * s.warmup_epochs, max(0, self.total_steps - 1))

    def resident(self, images: D.ImageSet) -> D.ImageSet:
        """On a GPU, keep a split's uint8 images in device memory when they fit in a quarter of what is free.

        Batches are then gathered, augmented and normalised on the GPU: no host loader, no copy per step.
        """
        if self.device.type != "cuda":
            return images
        free, _ = torch.cuda.mem_get_info(self.device)
        nbytes = images.images.numel() * images.images.element_size()
        if nbytes > free // 4:
            _logger.info("training images (%.1f GiB) stay in host memory", nbytes / 2**30)
            return D.ImageSet(images.images.pin_memory(), images.labels)
        return D.ImageSet(images.images.to(self.device), images.labels)  # labels stay on the CPU (seeded sampling)

    def build_model(self) -> None:
        torch.manual_seed(self.spec.seed)
        self.model = create_backbone(self.spec.backbone, weights=self.weights, num_classes=self.num_classes)
        self.mean, self.std = grayscale_norm(getattr(self.model, "pretrained_cfg", {}))
        if self.init_state is not None:  # warm start: the source's weights, and the inputs they were trained on
            apply_init_state(self.model, self.init_state, list(self.data.class_names))
            self.mean, self.std = self.init_state.mean, self.init_state.std
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
            # No cudnn.benchmark: measured on an H100 (resnet50, bf16, batch 256) it spent 16.8 s autotuning the
            # first step and gained nothing after it (66 ms per step either way).
            torch.cuda.reset_peak_memory_stats(self.device)
        self.groups = S.layer_groups(self.model)
        if self.spec.ema_decay is not None:
            self.ema = S.ema_init(self.model)

    def build_loss(self) -> None:
        weight = None
        if self.spec.class_balance == "weighted_loss":
            weight = D.class_weights(self.train_set.labels, self.num_classes).to(self.device)
        self.class_weight = weight

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss: (class-weighted) cross-entropy with the spec's label smoothing."""
        return F.cross_entropy(logits.float(), y, weight=self.class_weight, label_smoothing=self.spec.label_smoothing)

    @contextlib.contextmanager
    def evaluated_weights(self) -> Iterator[None]:
        """The weights that are validated and kept: the moving average when there is one, else the raw ones.

        Only parameters are swapped: BatchNorm statistics are the raw model's (they already are an average).
        """
        if self.ema is None:
            yield
            return
        raw = S.swap_parameters(self.model, self.ema)
        try:
            yield
        finally:
            S.swap_parameters(self.model, raw)

    def build_optimizer(self) -> None:
        s = self.spec
        self.optimizer = S.build_optimizer(
            self.model, self.groups, lr=s.lr, weight_decay=s.weight_decay, layer_decay=s.layer_decay
        )
        self.amp_dtype = amp_dtype = autocast_dtype(self.device, s.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def set_lr(self) -> float:
        s = self.spec
        lr = lr_at(self.global_step, base_lr=s.lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        return lr

    def lr_by_group(self) -> dict[str, float]:
        """Current lr of each trainable layer group (bottom = 0), as reported in progress events."""
        out: dict[str, float] = {}
        for g in self.optimizer.param_groups:
            if any(p.requires_grad for p in g["params"]):
                out[str(g["layer_group"])] = float(g["lr"])
        return out

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    # ---- features (frozen strategy) -------------------------------------------------------------------
    @property
    def uses_feature_cache(self) -> bool:
        return self.spec.strategy == "frozen" and self.spec.cache_features

    @torch.no_grad()
    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (pre-logits), computed once; the frozen backbone is deterministic in eval."""
        was_training = self.model.training
        self.model.eval()
        out = []
        for i in range(0, images.shape[0], EVAL_BATCH):
            if self.should_stop():  # a large dataset on CPU takes a while: stay cancellable
                raise TrainingCancelled("cancelled while caching backbone features")
            x = self.to_device(D.make_batch(images[i : i + EVAL_BATCH], mean=self.mean, std=self.std, g=None))
            with self.autocast():
                feats = pooled_features(self.model, x)
            out.append(feats.float())
        self.model.train(was_training)
        width = int(getattr(self.model, "num_features", 0))
        return torch.cat(out) if out else torch.zeros((0, width), device=self.device)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x

    # ---- steps -----------------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.uses_feature_cache:
            return classifier_of(self.model)(self.features["train"][idx])
        augment = self.spec.augment != "none" and self.spec.strategy != "frozen"
        u8 = self.train_set.images[idx.to(self.train_set.images.device)].to(self.device, non_blocking=True)
        x = D.make_batch(u8, mean=self.mean, std=self.std, g=g if augment else None, policy=self.spec.augment)
        return self.model(self.to_device(x))

    def train_step(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One optimiser step; returns the detached loss on the device (reading it would wait for the GPU)."""
        lr = self.set_lr()
        y = self.train_set.labels[idx].to(self.device, non_blocking=True)
        with self.autocast():
            logits = self.forward(idx, g)
        loss = self.loss(logits, y)
        self.scaler.scale(loss).backward()
        if self.spec.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.spec.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None and self.spec.ema_decay is not None:
            S.ema_update(self.ema, self.model, S.ema_decay_at(self.global_step, self.spec.ema_decay))
        self.global_step += 1
        self.last_lr = lr
        return loss.detach()

    def logits_for(self, images: torch.Tensor, split: str | None = None) -> torch.Tensor:
        """Logits for a uint8 image stack, under ``inference_mode`` and eval mode (train mode restored)."""
        was_training = self.model.training
        self.model.eval()
        out = []
        with torch.inference_mode():
            if split is not None and self.uses_feature_cache:
                out.append(classifier_of(self.model)(self.features[split]).float())
            else:
                for i in range(0, images.shape[0], EVAL_BATCH):
                    x = self.to_device(D.make_batch(images[i : i + EVAL_BATCH], mean=self.mean, std=self.std, g=None))
                    with self.autocast():
                        out.append(self.model(x).float())
        if was_training:
            S.set_train_mode(self.model)
        return torch.cat(out).cpu() if out else torch.zeros((0, self.num_classes))

    def penultimate_features(self, images: torch.Tensor, split: str | None = None) -> torch.Tensor:
        """Pooled pre-logit features (N, D) on the CPU, in eval mode: the out-of-distribution score's input."""
        if split is not None and self.uses_feature_cache and split in self.features:
            return self.features[split].float().cpu()
        was_training = self.model.training
        self.model.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, images.shape[0], EVAL_BATCH):
                u8 = images[i : i + EVAL_BATCH].to(self.device)
                x = self.to_device(D.make_batch(u8, mean=self.mean, std=self.std, g=None))
                with self.autocast():
                    out.append(pooled_features(self.model, x).float().cpu())
        if was_training:
            S.set_train_mode(self.model)
        width = int(getattr(self.model, "num_features", 0))
        return torch.cat(out) if out else torch.zeros((0, width))

    def evaluate(self) -> dict:
        """Validation loss, accuracy and AUROC (uncalibrated) for model selection."""
        labels = self.val_set.labels
        if labels.numel() == 0:
            return {"loss": None, "accuracy": None, "auroc": None, "note": "empty validation split"}
        logits = self.logits_for(self.val_set.images, "val")
        probs = torch.softmax(logits, 1).numpy()
        value, note = auroc(probs, labels.numpy(), self.positive)
        out: dict = {
            "loss": float(F.cross_entropy(logits, labels).item()),
            "accuracy": float((logits.argmax(1) == labels).float().mean().item()),
            "auroc": value,
        }
        if note:
            out["note"] = note
        return out

    # ---- checkpoints -----------------------------------------------------------------------------------
    def checkpoint_config(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "data_fingerprint": self.fingerprint,
            "weights": self.init_state.label if self.init_state else weights_label(self.weights),
        }

    def save_checkpoint(self) -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"step": self.global_step, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps},
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "ema": self.ema,
            "history": self.history,
            "config": self.checkpoint_config(),
            "model_args": model_args(self.spec.backbone, self.num_classes),
            "rng": {"torch": torch.get_rng_state()},
        }
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_path.with_name("last.pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt_path)  # atomic: a kill mid-write leaves the previous checkpoint intact

    def try_resume(self) -> bool:
        if not self.ckpt_path.is_file():
            return False
        try:
            ckpt = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a corrupt checkpoint must not wedge the job forever
            _logger.warning("ignoring unreadable checkpoint %s: %s", self.ckpt_path, e)
            return False
        if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("config") != self.checkpoint_config():
            _logger.warning("checkpoint %s is for another config; starting afresh", self.ckpt_path)
            return False
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.global_step = int(ckpt["scheduler"]["step"])
        self.epoch, self.history = int(ckpt["epoch"]), list(ckpt["history"])
        self.best_metric, self.best_epoch = ckpt["best_metric"], int(ckpt["best_epoch"])
        self.best_state, self.bad_epochs = ckpt["best_state"], int(ckpt["bad_epochs"])
        self.stopped_early = bool(ckpt["stopped_early"])
        self.ema = None if ckpt["ema"] is None else {k: v.to(self.device) for k, v in ckpt["ema"].items()}
        torch.set_rng_state(ckpt["rng"]["torch"])
        _logger.info("resuming %s after epoch %d", self.ckpt_path, self.epoch)
        return True

    # ---- epochs ----------------------------------------------------------------------------------------
    def emit(self, phase: str, **fields: object) -> None:
        """Send a JSON-able progress event; ``epoch`` is 1-based (the epoch running or just finished)."""
        event = {
            "phase": phase,
            "epoch": self.epoch,
            "epochs": self.spec.epochs,
            "epochs_done": self.epoch,  # checkpointed epochs: a resumed job starts after these
            "step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "total_groups": len(self.groups),
            "elapsed_s": round(time.perf_counter() - self.progress.started, 3),
            "gpu_peak_mem_mb": (torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else None),
        }
        event.update(fields)
        self.on_progress(event)

    def epoch_batches(self) -> Iterator[torch.Tensor]:
        order = D.epoch_order(
            self.train_set.labels, seed=self.spec.seed, epoch=self.epoch, balanced=self.spec.class_balance == "sampler"
        )
        yield from D.batches(order, self.spec.batch_size)

    def train_epoch(self) -> dict:
        s = self.spec
        n_unfrozen = S.unfrozen_count(s.strategy, self.epoch, len(self.groups), s.unfreeze_every)
        S.apply_freeze(self.model, self.groups, n_unfrozen)
        S.set_train_mode(self.model)
        g = torch.Generator().manual_seed(s.seed * 7919 + self.epoch)
        losses, n_images, t0 = [], 0, time.perf_counter()
        every = max(1, self.steps_per_epoch // 5)
        for i, idx in enumerate(self.epoch_batches()):
            if self.should_stop():
                raise TrainingCancelled(f"cancelled during epoch {self.epoch + 1}; last checkpoint kept")
            losses.append(self.train_step(idx, g))
            n_images += idx.numel()
            self.progress.steps_done_here += 1
            if (i + 1) % every == 0:
                rate = n_images / max(1e-9, time.perf_counter() - t0)
                self.emit(
                    "training",
                    epoch=self.epoch + 1,  # the epoch in progress (1-based)
                    lr=self.last_lr,
                    unfrozen_groups=n_unfrozen,
                    lr_by_group=self.lr_by_group(),
                    loss=float(torch.stack(losses[-every:]).mean()),
                    throughput_img_s=round(rate, 2),
                    eta_s=self.progress.eta(self.global_step),
                    val=None,
                )
        seconds = time.perf_counter() - t0
        return {
            "epoch": self.epoch + 1,
            "train_loss": float(torch.stack(losses).mean()) if losses else None,
            "lr": self.last_lr,
            "unfrozen_groups": n_unfrozen,
            "lr_by_group": self.lr_by_group(),
            "seconds": round(seconds, 3),
            "throughput_img_s": round(n_images / max(1e-9, seconds), 2),
            "pid": os.getpid(),  # which process trained it: shows a resumed job did not redo an epoch
        }

    def after_epoch(self, record: dict) -> None:
        """Validate the evaluated weights (EMA when on), keep the best by ``selection_step``, early-stop.

        With no validation metric at all (an empty split) the latest weights are kept.
        """
        self.emit("evaluating", epoch=record["epoch"], lr=self.last_lr, unfrozen_groups=record["unfrozen_groups"])
        with self.evaluated_weights():
            val = self.evaluate()
            score = val["auroc"] if val["auroc"] is not None else val["accuracy"]
            best_loss = self.history[self.best_epoch - 1]["val"].get("loss") if self.best_epoch else None
            keep, improved = selection_step(
                self.spec.early_stopping_metric, score, val.get("loss"), self.best_metric, best_loss
            )
            if keep:
                self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        record["val"] = val
        self.epoch += 1
        if keep:
            self.best_metric, self.best_epoch = score, self.epoch
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        patience = self.spec.early_stopping_patience
        self.stopped_early = patience is not None and self.bad_epochs >= patience and self.epoch < self.spec.epochs
        self.history.append(record)
        self.save_checkpoint()
        self.emit(
            "training",
            lr=record["lr"],
            unfrozen_groups=record["unfrozen_groups"],
            lr_by_group=record["lr_by_group"],
            loss=record["train_loss"],
            val={k: val.get(k) for k in ("accuracy", "auroc", "loss")},
            throughput_img_s=record["throughput_img_s"],
            eta_s=self.progress.eta(self.global_step),
        )

    def fit(self) -> None:
        self.progress = Progress(total_steps=self.total_steps)
        remaining = self.epoch < self.spec.epochs and not self.stopped_early
        if self.uses_feature_cache and remaining:
            t0 = time.perf_counter()
            self.features = {
                "train": self.extract_features(self.train_set.images),
                "val": self.extract_features(self.val_set.images),
            }
            self.timings["feature_cache_s"] = round(time.perf_counter() - t0, 3)
            _logger.info("cached frozen-backbone features in %.1f s", self.timings["feature_cache_s"])
        while self.epoch < self.spec.epochs and not self.stopped_early:
            self.after_epoch(self.train_epoch())
        if self.stopped_early:
            _logger.info("early stopping after epoch %d (best epoch %d)", self.epoch, self.best_epoch)
        assert self.best_state is not None
        self.model.load_state_dict(self.best_state)
        self.model.eval()
