"""From a config to the parts of a run: the Accelerator, the data, the model, the objective, the optimiser,
the loader, and the state a checkpoint restores.

Each builder takes its config section whole. The objects Accelerate checkpoints beside model and optimiser are
kept in our own list (``Run.checkpointed``): its order is the order of ``custom_checkpoint_<i>.pkl``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmvicreg.config import ConfigError, RunConfig, check_batch_split
from mmvicreg.data import CaptionSource, build_source
from mmvicreg.data.batching import EpochBatchSampler, make_loader
from mmvicreg.data.preprocess import DeviceInput, branch_preprocessors
from mmvicreg.data.protocols import StreamedSource
from mmvicreg.data.streaming import StreamDataset, StreamLoader
from mmvicreg.devices import resolve_device
from mmvicreg.evaluation.labelled import labelled_memory
from mmvicreg.evaluation.model_level import is_captioned
from mmvicreg.model import JointEmbedding
from mmvicreg.model.branch import needs_vocabulary
from mmvicreg.objective import build_objective, build_vcreg
from mmvicreg.train.speed import apply_speed_switches
from mmvicreg.train.checkpoint import FrozenWeights, TrainState, load_checkpoint, remove_debris
from mmvicreg.train.chunked import batch_norm_branches
from mmvicreg.train.cluster import process_group_kwargs, rendezvous_errors
from mmvicreg.train.optim import apply_resumed_lr, build_optimizer, build_scheduler, schedule_length
from mmvicreg.train.resume_check import LR_KEYS, check_resume
from mmvicreg.train.runfolder import RunFolderLock, claim_run_folder
from mmvicreg.train.targets import check_labelled, objective_facts, target_fields


@dataclass
class Run:
    """Everything a training run works with. ``model`` is the prepared (possibly DDP-wrapped) module,
    ``unwrapped`` the :class:`JointEmbedding` inside it."""

    config: RunConfig
    accelerator: Any
    output_dir: Path
    train_source: Any
    eval_source: Any
    model: torch.nn.Module
    unwrapped: JointEmbedding
    objective: torch.nn.Module
    vcreg: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    trainable: list[torch.nn.Parameter]
    sampler: Any  # set_epoch(epoch, start): EpochBatchSampler, or the StreamLoader of streamed data
    loader: Any  # DataLoader, or StreamLoader
    total_steps: int
    state: TrainState = field(default_factory=TrainState)
    reference_source: Any = None  # eval.reference: the labelled k-NN memory (None: the training source)
    checkpointed: list[Any] = field(default_factory=list)
    lock: RunFolderLock | None = None  # held on the main process until train() ends

    def register_for_checkpointing(self, obj: Any) -> None:
        self.checkpointed.append(obj)
        self.accelerator.register_for_checkpointing(obj)


def setup(config: RunConfig, objective: torch.nn.Module | None = None) -> Run:
    """Build every part of the run ``config`` describes; resume from the last checkpoint when ``resume``.

    ``config`` is taken as checked (:func:`mmvicreg.config.load_config` checked every rule when it loaded).
    ``objective`` replaces the one ``config.loss`` names (any module mapping ``{branch: z}`` to an output with
    ``loss, invariance, variance, covariance, per_branch``).
    """
    out_dir = Path(config.output_dir)
    accelerator = make_accelerator(config)
    lock = RunFolderLock(out_dir)
    resume_from = claim_folder(config, out_dir, accelerator, lock)
    try:
        return build_run(config, objective, accelerator, resume_from, lock)
    except BaseException:
        lock.release()
        raise


def build_run(
    config: RunConfig, objective: torch.nn.Module | None, accelerator: Any, resume_from: Path | None,
    lock: RunFolderLock,
) -> Run:
    """The parts of the run, with the run folder claimed (``lock`` held) and the checkpoint to resume chosen."""
    t, out_dir = config.train, Path(config.output_dir)
    changed = check_resume(config, resume_from, accelerator.print) if resume_from is not None else []
    train_source, eval_source, reference_source = build_sources(config)
    check_labelled(config, train_source)
    model = build_model(config, train_source, accelerator)
    if isinstance(train_source, StreamedSource) and train_source.sizes is None:  # streamed, size unknown
        if not t.samples_per_epoch:
            raise ConfigError(f"{train_source.unsized}")
        epoch_samples = t.samples_per_epoch
    else:
        epoch_samples = min(len(train_source), t.samples_per_epoch or len(train_source))
    steps_per_epoch = epoch_samples // t.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"data.train has {len(train_source)} samples, fewer than one batch of train.batch_size={t.batch_size}"
        )
    total_steps, warmup_steps = schedule_length(t, steps_per_epoch)
    if objective is None:
        objective = build_objective(config.loss, config.branches, **objective_facts(train_source, model))
    objective = objective.to(accelerator.device)
    objective_params = list(objective.parameters())  # InfoNCE's learnable temperature trains with the model
    optimizer = build_optimizer(model, t, extra_params=objective_params, device=accelerator.device)
    # The scheduler stays outside prepare(): Accelerate would step it once per process per step (it assumes a
    # per-process batch), while our train.batch_size is global and the schedule counts optimiser steps.
    scheduler = build_scheduler(optimizer, t, total_steps, warmup_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped: JointEmbedding = accelerator.unwrap_model(model)
    sampler, loader = build_loader(config, train_source, unwrapped, accelerator, target_fields(objective))
    trainable = [p for p in model.parameters() if p.requires_grad] + objective_params
    run = Run(
        config, accelerator, out_dir, train_source, eval_source, model, unwrapped, objective,
        build_vcreg(config.loss, unwrapped), optimizer, scheduler, trainable,
        sampler, loader, total_steps, reference_source=reference_source, lock=lock,
    )
    if objective_params:
        run.register_for_checkpointing(objective)
    run.register_for_checkpointing(scheduler)
    run.register_for_checkpointing(run.state)
    frozen = FrozenWeights(unwrapped, unwrapped.frozen_state_keys(), out_dir)
    accelerator.register_save_state_pre_hook(frozen.drop_from)
    if accelerator.is_main_process:
        remove_debris(out_dir)
        frozen.save_once(resuming=resume_from is not None)
    if t.micro_batch_size is not None and t.micro_batch_size < t.batch_size // accelerator.num_processes:
        accelerator.print(chunking_note(config, accelerator.num_processes, unwrapped))
    if resume_from is not None:
        load_checkpoint(accelerator, resume_from, len(run.checkpointed), frozen)
        if set(changed) & set(LR_KEYS):
            apply_resumed_lr(optimizer, scheduler, t)
        accelerator.print(f"resumed from {resume_from} at step {run.state.step}")
    return run


def chunking_note(config: RunConfig, processes: int, model: JointEmbedding) -> str:
    """The log line of a chunked run: what the objective sees, and what BatchNorm and VCReg see instead."""
    t = config.train
    per = t.batch_size // processes
    note = (
        f"train.micro_batch_size={t.micro_batch_size}: each process runs its {per} samples in "
        f"{per // t.micro_batch_size} chunks (gradient cache); the objective sees the whole batch of {t.batch_size}"
    )
    norms = batch_norm_branches(model)
    if norms:
        note += (f"; BatchNorm in branches {', '.join(norms)} sees one chunk of {t.micro_batch_size} at a time "
                 f"(expander_norm: layer and a BatchNorm-free encoder make a branch exact)")
    if config.loss.vcreg_layers:
        note += "; the VCReg penalty (loss.vcreg_layers) is computed per chunk and averaged"
    return note


def build_loader(config: RunConfig, source: Any, model: JointEmbedding, accelerator: Any,
                 targets: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """``(sampler, loader)``: the sampler's ``set_epoch(epoch, start)`` positions the loader's next epoch.

    ``targets``: raw sample fields the objective reads (``("label",)`` for ``supervised``), carried beside the
    branches' inputs (map-style sources only; :mod:`mmvicreg.train.targets`).

    The model declares each branch's preprocessing (``model.preprocessing()``); the data package builds from it
    the workers' per-item transforms and the device stage that ends the loader (:mod:`mmvicreg.data.preprocess`),
    so the loader yields batches on ``accelerator.device`` as the encoders read them (``augment_on: device``: the
    view's colour half already applied; ``data.decode_on: device``: the JPEGs decoded there). Map-style sources:
    :class:`EpochBatchSampler` over indices. Streamed ones (a :class:`~mmvicreg.data.protocols.StreamedSource`):
    the epoch plan of :mod:`mmvicreg.data.streaming`, which is both.
    """
    t, data = config.train, config.data
    rank, world = accelerator.process_index, accelerator.num_processes
    declared = model.preprocessing()
    items = branch_preprocessors(declared, train=True, decode_on=data.decode_on)
    on_device = DeviceInput(declared, True, accelerator.device, chunk=t.micro_batch_size)
    pin = data.pin_memory if data.pin_memory is not None else accelerator.device.type == "cuda"
    if isinstance(source, StreamedSource):
        if targets:
            raise ConfigError(f"loss.name: {config.loss.name} reads {list(targets)} of each sample through the "
                              f"map-style loader; streamed data.train is not supported with it")
        dataset = StreamDataset(source, items, t.batch_size, t.seed, rank, world, data.workers, t.samples_per_epoch)
        loader = StreamLoader(dataset, data.workers, pin, device_stage=on_device)
        return loader, loader
    sampler = EpochBatchSampler(len(source), t.batch_size, t.seed, rank, world)
    loader = make_loader(source, items, batch_sampler=sampler, workers=data.workers, pin_memory=pin,
                         seed=t.seed, device_stage=on_device, extra_fields=targets)
    return sampler, loader


def claim_folder(config: RunConfig, out_dir: Path, accelerator: Any, lock: RunFolderLock) -> Path | None:
    """The main process locks ``out_dir`` and checks what it holds (:mod:`mmvicreg.train.runfolder`); every
    process gets the checkpoint to resume from, or the same one-line refusal."""
    from accelerate.utils import broadcast_object_list

    answer: list[Any] = [None, None]  # (checkpoint path, refusal)
    if accelerator.is_main_process:
        try:
            lock.acquire()
            found = claim_run_folder(config, out_dir)
            answer = [str(found) if found is not None else None, None]
        except ConfigError as e:
            lock.release()
            answer = [None, str(e)]
    if accelerator.num_processes > 1:
        broadcast_object_list(answer)
    if answer[1] is not None:
        raise ConfigError(answer[1])
    return Path(answer[0]) if answer[0] is not None else None


# The init option through which each tracker takes a run's name (Accelerate passes `project_name` as the project).
RUN_NAME_OPTIONS = {"wandb": "name", "trackio": "name", "mlflow": "run_name", "clearml": "task_name", "swanlab": "experiment_name"}


def tracker_init(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Accelerate's ``init_kwargs``: ``train.tracker_init`` per tracker, with the run name where it has a slot.

    The run name is ``train.run_name``, or the output folder's name; an explicit option in ``tracker_init`` wins.
    """
    t = config.train
    name = t.run_name or Path(config.output_dir).name
    options = {}
    for tracker in t.trackers:
        given = dict(t.tracker_init.get(tracker, {}))
        if tracker in RUN_NAME_OPTIONS:
            given.setdefault(RUN_NAME_OPTIONS[tracker], name)
        options[tracker] = given
    return options


def make_accelerator(config: RunConfig) -> Any:
    """The Accelerator (precision, trackers, CPU processes), seeded; checks the batch splits over processes
    (:func:`mmvicreg.config.check_batch_split`, the rule the config checked for one process).

    ``train.mixed_precision: null`` leaves the precision to Accelerate (``accelerate launch --mixed_precision``,
    ``ACCELERATE_MIXED_PRECISION``, its config file; else ``no``) and fills the key with what it chose, so the
    saved config and the resume check see the precision the run used."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    t = config.train
    # Several processes without a GPU (torchrun / accelerate launch on CPUs) need Accelerate's cpu flag to
    # start gloo; a single process keeps Accelerate's own device choice.
    launched_on_cpus = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    with rendezvous_errors():  # an unreachable rendezvous is one line (train/cluster.py)
        accelerator = Accelerator(
            cpu=t.cpu or launched_on_cpus,
            mixed_precision=t.mixed_precision,
            log_with=t.trackers or None,
            project_dir=str(config.output_dir),
            kwargs_handlers=process_group_kwargs(t),
        )
    if t.mixed_precision is None:  # what Accelerate was told (launch flag, env, its config file), recorded as used
        t.mixed_precision = str(accelerator.mixed_precision)
    check_batch_split(t, accelerator.num_processes)  # the config's batch rules, now that the processes are known
    set_seed(t.seed, device_specific=True)  # each process draws its own augmentations; DDP syncs the init
    return accelerator


def build_sources(config: RunConfig) -> tuple[Any, Any, Any]:
    """``(data.train source, data.eval source or None, the k-NN reference)``: the reference is ``eval.reference``
    when given, else the training source (which then needs labels for a labelled eval source)."""
    try:
        resolve_device(config.eval.device)  # a GPU that is not there is named now, not after training
    except ValueError as e:
        raise ConfigError(f"eval.device: {e}") from None
    train = build_source(config.data.train, "train")
    evaluation = build_source(config.data.eval, "test") if config.data.eval is not None else None
    reference = train
    if evaluation is not None and not is_captioned(evaluation):
        try:  # a labelled eval set is scored by k-NN against a labelled reference: named now, not after training
            reference = labelled_memory(train, config.eval.reference)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return train, evaluation, reference


def build_model(config: RunConfig, train_source: Any, accelerator: Any) -> JointEmbedding:
    """The branches of ``config``; learned vocabularies (GRU, word-piece) come from the training captions."""
    captions = None
    if isinstance(train_source, CaptionSource):
        captions = [c for caps in train_source.captions for c in caps]
    elif isinstance(train_source, StreamedSource) and needs_vocabulary(config.branches):
        captions = list(train_source.iter_captions())  # streamed: one pass over the shards' captions
    model = JointEmbedding.from_config(config.branches, captions=captions)
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    applied = apply_speed_switches(model, config.train, accelerator.device)
    if applied:
        accelerator.print("speed switches: " + ", ".join(applied))
    return model
