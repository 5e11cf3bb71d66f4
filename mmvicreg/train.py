"""The training loop: any set of branches, the VICReg objective, on Accelerate. Read top to bottom.

    mmvicreg train examples/quickstart.yaml train.max_steps=100
    accelerate launch -m mmvicreg train CONFIG.yaml            # several GPUs or nodes

``train.batch_size`` is the *global* batch, split evenly over processes (as published); variance and covariance
use the global batch through the objective's gather, so two processes follow one process's trajectory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from mmvicreg.config import BRANCH_LOSS_KEYS, ConfigError, RunConfig, dump_config
from mmvicreg.data import BranchDataset, CaptionSource, build_source, collate_branches
from mmvicreg.diagnostics import embedding_std, rankme
from mmvicreg.losses import BranchCoefficients, MultiBranchOutput
from mmvicreg.objectives import VCRegHooks, build_objective
from mmvicreg.model import JointEmbedding
from mmvicreg.safety import CheckpointError, first_line, fsync_dir, fsync_tree, verify_checkpoint

CHECKPOINTS = "checkpoints"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite and the run is configured to stop."""


# ------------------------------------------------------------------------------------------- building blocks


def build_data(section: dict[str, Any] | None, default_split: str) -> Any:
    if section is None:
        return None
    options = dict(section)
    return build_source(options.pop("format"), options.pop("split", default_split), **options)


def model_branch_configs(config: RunConfig) -> dict[str, dict[str, Any]]:
    """The branches without their loss coefficients (those belong to the objective)."""
    return {n: {k: v for k, v in b.items() if k not in BRANCH_LOSS_KEYS} for n, b in config.branches.items()}


def branch_coefficients(config: RunConfig) -> dict[str, BranchCoefficients]:
    """Per-branch μ, ν, γ: the branch's own values where given, else the global ``loss.*`` ones."""
    loss = config.loss
    return {
        name: BranchCoefficients(
            float(b.get("variance_weight", loss.variance_weight)),
            float(b.get("covariance_weight", loss.covariance_weight)),
            float(b.get("gamma", loss.gamma)),
        )
        for name, b in config.branches.items()
    }


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Biases and normalisation parameters (every tensor with ndim ≤ 1) get no weight decay and, under LARS,
    no trust-ratio adaptation: the published ``exclude_bias_and_norm`` (timm's Lars adapts only decayed groups)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    model: torch.nn.Module, config: RunConfig, extra_params: list[torch.nn.Parameter] | None = None
) -> torch.optim.Optimizer:
    """LARS, SGD or AdamW over the model (and ``extra_params``: the objective's own, never decayed)."""
    opt = config.train.optimizer
    lr = opt.lr if opt.lr is not None else opt.base_lr * config.train.batch_size / 256
    groups = param_groups(model, opt.weight_decay)
    if extra_params:
        groups[1]["params"] = groups[1]["params"] + list(extra_params)
    if opt.name == "lars":
        from timm.optim import Lars

        return Lars(groups, lr=lr, momentum=opt.momentum, trust_coeff=opt.eta)
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=opt.momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(opt.betas))  # type: ignore[arg-type]


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier: linear warmup from 0 over ``warmup_steps``, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class EpochBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch shuffling into full global batches; each process takes its slice of every batch.

    Written here rather than via ``accelerator.prepare(dataloader)`` because resuming mid-epoch must replay
    exactly the same batches: the order depends only on (seed, epoch), and ``start`` skips consumed batches.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.local = global_batch // world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.n // self.global_batch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        for b in range(self.start, self.n // self.global_batch):
            first = b * self.global_batch + self.rank * self.local
            yield order[first : first + self.local]


@dataclass
class TrainState:
    """What the checkpoint needs beyond model, optimiser, scheduler and RNG: where we are."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of the current epoch already consumed
    skipped_nonfinite: int = 0

    def state_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.__dict__.update(state)


def latest_checkpoint(output_dir: Path) -> Path | None:
    ckpts = sorted((output_dir / CHECKPOINTS).glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    return ckpts[-1] if ckpts else None


def save_checkpoint(accelerator, output_dir: Path, step: int, keep: int) -> Path:
    """Accelerate state written to a temporary folder, then renamed: a crash mid-save keeps the last checkpoint."""
    root = output_dir / CHECKPOINTS
    final, tmp = root / f"step_{step:08d}", root / f".tmp_step_{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()  # every rank's RNG file is in
        if accelerator.is_main_process:
            fsync_tree(tmp)  # on disk before the rename makes it the checkpoint to resume from
    except BaseException as e:  # a full disk, a quota, a vanished mount: say so, keep the last good checkpoint
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, (OSError, RuntimeError)):  # torch.save reports a failed write as a RuntimeError
            raise
        raise CheckpointError(
            f"could not write the checkpoint of step {step} to {tmp} ({type(e).__name__}: {first_line(e)}); the "
            f"last complete checkpoint, {latest_checkpoint(output_dir) or 'none'}, is intact: free space and rerun "
            f"with resume=true"
        ) from None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(root)
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def nonfinite_terms(out: MultiBranchOutput) -> list[str]:
    terms = {"invariance": out.invariance, "variance": out.variance, "covariance": out.covariance}
    for branch, t in out.per_branch.items():
        terms.update({f"{name}/{branch}": value for name, value in t.items()})
    terms = {k: float(v.detach()) for k, v in terms.items()}
    return [f"{k} = {v}" for k, v in terms.items() if not math.isfinite(v)] or [f"loss = {float(out.loss.detach())}"]


def _nonfinite_error(step: int, what: str, out_dir: Path) -> NonFiniteLossError:
    last = latest_checkpoint(out_dir)
    return NonFiniteLossError(
        f"non-finite training at step {step}: {what}. The run stopped; the last good checkpoint is "
        f"{last or 'none (no checkpoint was written yet)'}. Lower the learning rate, add train.grad_clip, "
        f"or set train.on_nonfinite=skip"
    )


def weights_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ------------------------------------------------------------------------------------------- the run


def train(config: RunConfig) -> dict[str, Any]:
    """Train, checkpoint, export and evaluate as ``config`` says. Returns the final evaluation (may be empty)."""
    from accelerate import Accelerator
    from accelerate.utils import LoggerType, set_seed

    t = config.train
    out_dir = Path(config.output_dir)
    known_trackers = sorted(str(k.value) for k in LoggerType)
    for tracker in t.trackers:
        if tracker not in known_trackers:
            raise ConfigError(f"train.trackers names {tracker!r}; known trackers: {', '.join(known_trackers)}")
    resume_from = latest_checkpoint(out_dir) if config.resume else None
    if not config.resume and latest_checkpoint(out_dir) is not None:
        raise ConfigError(
            f"{out_dir} already holds checkpoints of an earlier run; set resume=true to continue it, "
            f"or choose another output_dir"
        )
    # Several processes without a GPU (torchrun / accelerate launch on CPUs) need Accelerate's cpu flag to
    # start gloo; a single process keeps Accelerate's own device choice.
    launched_on_cpus = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=t.cpu or launched_on_cpus,
        mixed_precision=t.mixed_precision,
        log_with=t.trackers or None,
        project_dir=str(out_dir),
    )
    world, rank = accelerator.num_processes, accelerator.process_index
    if t.batch_size % world:
        raise ConfigError(f"train.batch_size {t.batch_size} must be divisible by the number of processes ({world})")
    if t.batch_size // world < 2:
        raise ConfigError(f"train.batch_size {t.batch_size} over {world} processes leaves < 2 samples per process")
    set_seed(t.seed, device_specific=True)  # each process draws its own augmentations; DDP syncs the init

    # Data and model. Learned vocabularies come from the training captions.
    train_source = build_data(config.data.train, "train")
    eval_source = build_data(config.data.eval, "test")
    captions = [c for caps in train_source.captions for c in caps] if isinstance(train_source, CaptionSource) else None
    model = JointEmbedding.from_config(model_branch_configs(config), captions=captions)
    if world > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    steps_per_epoch = len(train_source) // t.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"data.train has {len(train_source)} samples, fewer than one batch of train.batch_size={t.batch_size}"
        )
    total_steps = t.max_steps or t.epochs * steps_per_epoch
    warmup = t.warmup_steps if t.warmup_steps is not None else int(t.warmup_epochs * steps_per_epoch)

    loss = config.loss
    objective = build_objective(
        loss.name,
        model.branch_names,
        pairs=loss.pairs,
        invariance_weight=loss.invariance_weight,
        coefficients=branch_coefficients(config),
        eps=loss.eps,
        covariance=loss.covariance,  # type: ignore[arg-type]
        temperature=loss.temperature,
        learn_temperature=loss.learn_temperature,
        margin=loss.margin,
        max_violation=loss.max_violation,
        barlow_lambda=loss.barlow_lambda,
        ablation=loss.ablation,
    ).to(accelerator.device)
    objective_params = list(objective.parameters())  # InfoNCE's learnable temperature trains with the model
    if objective_params:
        accelerator.register_for_checkpointing(objective)

    optimizer = build_optimizer(model, config, extra_params=objective_params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup, t.min_lr_ratio))
    # The scheduler stays outside prepare(): Accelerate would step it once per process per step (it assumes a
    # per-process batch), while our train.batch_size is global and the schedule counts optimiser steps.
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    unwrapped: JointEmbedding = accelerator.unwrap_model(model)

    vcreg = None
    if loss.vcreg_layers:  # VCReg on intermediate layers, e.g. branches.image.encoder.model.stages.2
        vcreg = VCRegHooks(
            unwrapped,
            loss.vcreg_layers,
            variance_weight=loss.vcreg_variance_weight,
            covariance_weight=loss.vcreg_covariance_weight,
            spatial=loss.vcreg_spatial,
        )

    sampler = EpochBatchSampler(len(train_source), t.batch_size, t.seed, rank, world)
    loader = DataLoader(
        BranchDataset(train_source, unwrapped.preprocessors(train=True)),
        batch_sampler=sampler,
        collate_fn=collate_branches({n: b.pad_id for n, b in unwrapped.branches.items()}),
        num_workers=config.data.workers,
        pin_memory=config.data.pin_memory,
        persistent_workers=False,
        # Its own generator: creating an iterator mid-epoch (on resume) must not draw from the global RNG
        # that the augmentations use, or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(t.seed),
    )
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if accelerator.is_main_process:  # folders of saves cut short by a crash; never resumed from
        for stale in (out_dir / CHECKPOINTS).glob(".tmp_step_*"):
            shutil.rmtree(stale, ignore_errors=True)
    if resume_from is not None:
        # Accelerate unpickles custom states with weights_only=False and ignores an unreadable RNG file: check
        # every file first, so that a stranger's checkpoint cannot run code and a damaged one is named.
        custom = [f"custom_checkpoint_{i}.pkl" for i in range(len(accelerator._custom_objects))]
        verify_checkpoint(resume_from, ["model.safetensors", "optimizer.bin", f"random_states_{rank}.pkl", *custom])
        accelerator.load_state(str(resume_from))
        accelerator.print(f"resumed from {resume_from} at step {state.step}")

    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, out_dir / "config.yaml")
        _truncate_metrics(out_dir / "metrics.jsonl", state.step)
        _write_data_report(out_dir, {"train": train_source, "eval": eval_source}, accelerator.print)
    if t.trackers:
        accelerator.init_trackers("mmvicreg", config=_flat(config.to_dict()))
    metrics_file = open(out_dir / "metrics.jsonl", "a") if accelerator.is_main_process else None

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps, initial=state.step, disable=not (t.progress and accelerator.is_main_process), unit="step"
    )
    last_rankme: dict[str, float] = {}
    window_start, window_samples = time.perf_counter(), 0
    last_eval: dict[str, Any] = {}
    consecutive_skips = 0
    model.train()
    while state.step < total_steps:
        sampler.set_epoch(state.epoch, start=state.batch)
        for batch in loader:
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
            with accelerator.autocast():
                zs = model(batch)
            out = objective(zs)  # statistics in float32 whatever the autocast dtype
            if vcreg is not None:
                out = out._replace(loss=out.loss + vcreg.loss())

            # Backward always runs (under DDP it is a collective: every rank must join), then one flag tensor
            # and a single host sync per step decide whether the update is taken. The norm is needed anyway to
            # catch non-finite gradients under a finite loss; with no train.grad_clip, clipping at inf only
            # measures it.
            accelerator.backward(out.loss)
            grad_norm = accelerator.clip_grad_norm_(
                [*model.parameters(), *objective_params], t.grad_clip or float("inf")
            )
            flags = torch.stack([out.loss.detach().float(), torch.as_tensor(grad_norm).float().to(out.loss.device)])
            bad_loss, bad_grad = accelerator.reduce((~torch.isfinite(flags)).float(), "sum").tolist()
            problem = None  # the same on every process: the flags were summed over processes
            if bad_loss > 0:
                problem = ", ".join(nonfinite_terms(out))
            elif bad_grad > 0 and accelerator.scaler is None:
                # Under fp16 loss scaling, overflowing gradients are routine: the GradScaler inside
                # optimizer.step() skips that update and lowers the scale, so they are not a problem here.
                problem = f"gradient norm = {float(grad_norm)}"
            if problem is not None:
                if t.on_nonfinite == "stop":
                    raise _nonfinite_error(state.step + 1, problem, out_dir)
                accelerator.print(f"skipping step {state.step + 1}: non-finite {problem}")
                optimizer.zero_grad(set_to_none=True)
                state.skipped_nonfinite += 1
                state.batch += 1
                consecutive_skips += 1
                if consecutive_skips >= t.max_consecutive_skips:  # the weights themselves are broken
                    raise _nonfinite_error(
                        state.step + 1, f"{problem}, {consecutive_skips} batches in a row (train.max_consecutive_skips)",
                        out_dir,
                    )
                continue
            consecutive_skips = 0

            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.batch += 1
            window_samples += t.batch_size
            bar.update(1)

            if state.step % t.log_every == 0 or state.step == total_steps:
                record = _log_record(accelerator, state, out, zs, scheduler, last_rankme, t.rankme_every)
                rate = window_samples / max(1e-9, time.perf_counter() - window_start)
                window_start, window_samples = time.perf_counter(), 0
                record["samples_per_s"] = rate
                record.update(_skip_counts(train_source))
                bar.set_postfix(loss=f"{record['loss']:.3f}", samples_s=f"{rate:.0f}")
                if metrics_file:
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                accelerator.log(record, step=state.step)
            if state.step % t.checkpoint_every == 0:
                if not weights_finite(model):  # never let a checkpoint replace good weights with broken ones
                    raise _nonfinite_error(state.step, "the weights after the optimiser step", out_dir)
                save_checkpoint(accelerator, out_dir, state.step, t.keep_checkpoints)
            if t.eval_every and eval_source is not None and state.step % t.eval_every == 0:
                last_eval = evaluate(unwrapped, eval_source, train_source, config, accelerator)
                model.train()
            if state.step >= total_steps:
                break
        else:
            state.epoch, state.batch = state.epoch + 1, 0
    bar.close()

    latest = latest_checkpoint(out_dir)
    if latest is None or int(latest.name.split("_")[1]) != state.step:
        save_checkpoint(accelerator, out_dir, state.step, t.keep_checkpoints)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(out_dir / "model")
        if metrics_file:
            metrics_file.close()
        _write_data_report(out_dir, {"train": train_source, "eval": eval_source}, None)
        _plot(out_dir)
    if eval_source is not None and (not last_eval or last_eval.get("step") != state.step):
        last_eval = evaluate(unwrapped, eval_source, train_source, config, accelerator)
    accelerator.end_training()
    return last_eval


def _log_record(accelerator, state, out, zs, scheduler, last_rankme, rankme_every) -> dict[str, Any]:
    terms = torch.stack([out.loss, out.invariance, out.variance, out.covariance]).detach().float()
    terms = accelerator.reduce(terms, "mean")
    record: dict[str, Any] = {
        "step": state.step,
        "epoch": state.epoch,
        "loss": float(terms[0]),
        "invariance": float(terms[1]),
        "variance": float(terms[2]),
        "covariance": float(terms[3]),
        "lr": float(scheduler.get_last_lr()[0]),
    }
    for name, z in zs.items():
        record[f"std/{name}"], record[f"std_min/{name}"] = embedding_std(z)
        if state.step % rankme_every == 0 or name not in last_rankme:
            last_rankme[name] = rankme(z)
        record[f"rankme/{name}"] = last_rankme[name]
    for key, value in (getattr(out, "terms", None) or {}).items():  # objective-specific scalars
        record[key] = float(value)
    if state.skipped_nonfinite:
        record["skipped_nonfinite"] = state.skipped_nonfinite
    return record


def evaluate(model: JointEmbedding, eval_source, train_source, config: RunConfig, accelerator) -> dict[str, Any]:
    """Retrieval on a captioned eval source, k-NN on a labelled one; written to ``eval.json`` and printed."""
    from mmvicreg.evaluation.model_eval import chance_recall, evaluate_knn, evaluate_retrieval, format_retrieval

    result: dict[str, Any] = {}
    if accelerator.is_main_process:
        e = config.eval
        if isinstance(eval_source, CaptionSource):
            result = evaluate_retrieval(model, eval_source, e.branches, e.batch_size, e.protocol, e.captions_per_image)
            n = int(result["num_images"])
            cpi = result["num_captions"] / max(1, n)
            chance: dict[str, float] = {}
            for k in (1, 5, 10):
                chance.update(chance_recall(n if e.protocol == "5k" else n // 5, cpi, k))
            result["chance"] = chance
            accelerator.print(f"held-out retrieval ({e.protocol} protocol):\n" + format_retrieval(result, chance))
        else:
            result = {"knn": {}}
            for name in (e.branches or model.branch_names):
                knn = evaluate_knn(model, train_source, eval_source, name, batch_size=e.batch_size)
                result["knn"][name] = knn
                accelerator.print(f"k-NN top-1 of branch {name!r}: " + ", ".join(
                    f"k={k.split('_k')[1]}: {v:.1f}%" for k, v in knn.items() if k.startswith("top1_k")))
        result["step"] = _step_of(accelerator)
        path = Path(config.output_dir) / "eval.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, path)
    accelerator.wait_for_everyone()
    return result


def _step_of(accelerator) -> int:
    for obj in accelerator._custom_objects:
        if isinstance(obj, TrainState):
            return obj.step
    return -1


def _skip_counts(source) -> dict[str, int]:
    """Samples the bad-data policies left out of the training data so far (in this process), when any."""
    report = source.data_report() if hasattr(source, "data_report") else {}
    return {k: report[k] for k in ("skipped_images", "skipped_captions") if report.get(k)}


def _write_data_report(out_dir: Path, sources: dict[str, Any], say) -> None:
    """``data_report.json``: per source, what ``on_bad_image`` / ``on_bad_caption`` left out; printed when ``say``."""
    report = {k: s.data_report() for k, s in sources.items() if s is not None and hasattr(s, "data_report")}
    if say is not None:
        for key, r in report.items():
            reasons = {**r.get("skipped_image_reasons", {}), **r.get("skipped_caption_reasons", {})}
            detail = f" ({', '.join(f'{why}: {n}' for why, n in sorted(reasons.items()))})" if reasons else ""
            captions = f", {r['skipped_captions']} captions" if "skipped_captions" in r else ""
            say(f"data.{key} {r['source']}: {r['samples']} samples; skipped {r['skipped_images']} images{captions}"
                f"{detail}")
    tmp = out_dir / "data_report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out_dir / "data_report.json")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (work lost since the checkpoint we resume from, to be redone)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line of a run killed while writing it
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            keep.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flat(v, key + "."))
        else:
            flat[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat


def _plot(out_dir: Path) -> None:
    """PNG plots of the loss terms, per-branch std and RankMe against step, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = out_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    if not records:
        return
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    steps = [r["step"] for r in records]
    groups = {
        "terms": ["loss", "invariance", "variance", "covariance"],
        "std": sorted({k for r in records for k in r if k.startswith(("std/", "std_min/"))}),
        "rankme": sorted({k for r in records for k in r if k.startswith("rankme/")}),
    }
    for name, keys in groups.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            ax.plot(steps, [r.get(key, float("nan")) for r in records], label=key)
        ax.set_xlabel("step")
        ax.set_title(name)
        if name == "terms":
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plots / f"{name}.png", dpi=100)
        plt.close(fig)
